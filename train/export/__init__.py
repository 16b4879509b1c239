"""Export: merged models to GGUF plus an Ollama Modelfile, with a parity check."""
