"""llama-cpp-python's OpenAI-compatible server, with llama.cpp's weight repacking set as the in-process back
end sets it (off on a CPU with AMX, where it crashed: `assistant.llm.llamacpp.weight_repacking`).

    python -m assistant.llm.llamacpp_server --model FILE.gguf --host 127.0.0.1 --port 8080

Takes the same arguments as `python -m llama_cpp.server`.
"""

from __future__ import annotations

from assistant.llm.llamacpp import _model_params


def main() -> None:
    from llama_cpp.server.__main__ import main as serve

    # the server loads its model inside main(); the wrapped default parameters stay for its whole run
    with _model_params():
        serve()


if __name__ == "__main__":
    main()
