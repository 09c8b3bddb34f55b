"""What users run on a trained policy: eval, render (videos), export (ONNX), plots and kernel/engine
benchmarks. Each works on either engine through ksimdsl.runtime.engine."""
