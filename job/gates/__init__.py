"""One gate per kind of untrusted value. Every value of that kind passes its gate where it enters the job,
whichever surface brings it (a data folder, a store, a model's metadata, a flag, the pod environment):

  json_doc     JSON from anywhere: size and nesting bounded, one loader (`load_json`)
  text         text that reaches a terminal, a log line or a CI log: controls, line breaks and workflow
               commands neutralised (`shown`)
  class_names  a model's or a dataset's class names: printable, one line, unique, bounded (`check_class_names`)
  images       an image file from anywhere: format from its bytes against an allowlist, bytes and pixels bounded
               before decoding, then the one preprocessing rule (`model_input`, `load_rgb`; `ImageRejected`)

The gates sit below every other package but `job.errors`, so any layer may call them. docs/threat-model.md
lists each surface, the gate it passes and the rows that prove it.
"""
