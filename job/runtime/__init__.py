"""runtime: where the job runs (platform conventions), what it may use (CPUs, ISA), how it reports."""
