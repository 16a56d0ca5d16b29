"""`python -m job serve`: the trained model over HTTP, with no TensorFlow.

The model is loaded through `job predict`'s verified path (with --public-key, the run's signature; the
manifest hashes; the model contract), warmed up, and only then reported ready. One process serves three protocols
on one port: the Open Inference Protocol v2 (KServe, Triton clients), SageMaker's /ping and /invocations,
and Vertex AI's AIP_* routes. Concurrent requests are batched before they reach ONNX Runtime.

  settings   the flags and the platform's AIP_* variables, resolved and checked
  loading    the verified model (signature, manifest, contract: job predict's path) and the warm-up
  tensors    JSON and binary tensors -> uint8 [N, 32, 32, 3], every byte treated as hostile
  images     image bytes -> uint8 [32, 32, 3], through the project's one image gate (job.gates.images)
  batcher    the bounded queue and the dynamic batcher in front of ONNX Runtime
  v2, sagemaker, vertex   one protocol each: request -> images, probabilities -> response
  predictions              the SageMaker / Vertex AI answer rows
  http       the ASGI plumbing: bounded body reading, JSON answers, the HTTP error
  app        routes, readiness, request logs and metrics
  metrics    the Prometheus metrics
  main       the process: uvicorn, SIGTERM drain, exit codes
"""
