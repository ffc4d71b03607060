"""One family of errors a user can fix (`UserError`); everything else is a bug and is not dressed up as one."""

from __future__ import annotations

import pytest

from assistant.compliance.audit import AuditStoreError
from assistant.llm.generate import GenerationError
from assistant.packs import PackError
from assistant.serving.api import failure
from assistant.serving.serve import TokensError
from assistant.tools.grounding_fit import FitError
from assistant.understanding.intents import ClassifierDirError, IntentDataError
from finetune.config import ConfigError
from finetune.data import DataError
from finetune.export import ExportError
from finetune.train import FinetuneError
from index.embed import ModelSpecError
from index.errors import SettingError, UserError
from index.ingest import IngestError
from index.limits import LimitExceeded
from ui.auth import UsersError


@pytest.mark.parametrize("cls", [GenerationError, AuditStoreError, FitError, ClassifierDirError, IntentDataError,
                                 PackError, TokensError, ConfigError, DataError, ExportError, FinetuneError,
                                 ModelSpecError, SettingError, IngestError, LimitExceeded, UsersError])
def test_every_user_fixable_error_is_a_user_error(cls):
    assert issubclass(cls, UserError)


def test_cli_shows_a_bad_setting_in_one_line(capsys):
    from assistant.__main__ import main

    assert main(["ask", "--top-k", "99", "What is the routing number?"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --top-k must be between 1 and 10") and "Traceback" not in err


def test_cli_does_not_hide_a_bug_as_a_user_error(monkeypatch):
    import assistant.__main__ as cli

    def broken(args):
        raise ValueError("an internal invariant broke")  # a bug, not something the user typed

    monkeypatch.setattr(cli, "cmd_ask", broken)
    with pytest.raises(ValueError, match="invariant"):  # it ends with its traceback, not as "error: ..."
        cli.main(["ask", "What is the routing number?"])


def test_finetune_cli_bad_override_is_a_user_error(capsys):
    from finetune.__main__ import main

    assert main(["check-data", "--lora-r", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "lora_r" in err and "Traceback" not in err


def test_api_answers_a_bug_with_an_apology_and_the_turn_id():
    exc = KeyError("evidence_weights")  # what a bug looks like inside the pipeline
    exc.turn_id = "t-1234"
    error = failure(exc)
    assert error.status == 500 and "t-1234" in error.message
    assert "evidence_weights" not in error.message and "KeyError" not in error.message
    user = failure(GenerationError("cannot reach the server at http://127.0.0.1:9/v1"))
    assert user.status == 502 and "cannot reach" in user.message
