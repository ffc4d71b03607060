"""The LLM back ends: transformers, llama.cpp, OpenAI-compatible servers, model resolution, CUDA-graph decoding."""
