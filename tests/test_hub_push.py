"""``sfsc-timm push`` against a local STAND-IN for the Hub's write API (tests/hub_standin.py), not the real Hub."""
import shutil

import pytest
from huggingface_hub import ModelCard

from sfsc_timm.errors import UsageError
from sfsc_timm.hub import PushError, push
from sfsc_timm.hub.push import main as push_main

from hub_fixtures import REPO_ID, build_hub_run, folder_bytes
from hub_standin import StandInHub

TOKEN = 'hf_standin_0123456789abcdef'  # a made-up token the stand-in accepts; it must never be printed


@pytest.fixture(scope='module')
def hub_run(tmp_path_factory):
    return build_hub_run(tmp_path_factory)  # built once per session, shared by the test_hub_* modules


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """The stand-in Hub on 127.0.0.1, huggingface_hub pointed at it, a token in HF_TOKEN."""
    with StandInHub(token=TOKEN) as hub:
        monkeypatch.setattr('huggingface_hub.constants.ENDPOINT', hub.url)
        monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', False)
        monkeypatch.setattr('huggingface_hub.constants.HF_HUB_DISABLE_XET', True)  # the stand-in speaks LFS only
        monkeypatch.setattr('huggingface_hub.constants.HF_TOKEN_PATH', str(tmp_path / 'no_token_file'))
        monkeypatch.setenv('HF_TOKEN', TOKEN)
        monkeypatch.delenv('HF_OIDC_RESOURCE', raising=False)
        yield hub


@pytest.fixture
def export_copy(hub_run, tmp_path):
    """A copy of the session's export (made for REPO_ID) that a test may push or re-export."""
    folder = tmp_path / 'hub'
    shutil.copytree(hub_run.export_dir, folder)
    return folder


def test_push_uploads_exactly_the_exported_files(standin, export_copy, capsys):
    before = folder_bytes(export_copy)
    assert push_main([str(export_copy), '--repo-id', REPO_ID, '--private']) == 0
    repo = standin.repos[REPO_ID]
    assert repo.private
    assert repo.branches['main'] == before  # every exported file, byte for byte, and nothing else
    (commit,) = repo.commits
    assert commit['files']['model.safetensors'] == 'lfs' and commit['files']['README.md'] == 'regular'
    assert ('POST', '/api/validate-yaml') in standin.requests  # the card's metadata went through validation
    assert folder_bytes(export_copy) == before  # pushing an export made for this repository does not touch it
    out = capsys.readouterr()
    assert 'pushed' in out.out and TOKEN not in out.out + out.err


def test_push_a_run_folder_exports_it_first(standin, hub_run, tmp_path):
    result = push(hub_run.run_dir, 'sfsc-tests/other', export_dir=tmp_path / 'hub', latency_repeats=1)
    assert result.folder == tmp_path / 'hub'
    assert ModelCard.load(tmp_path / 'hub' / 'README.md').data.sfsc['repo_id'] == 'sfsc-tests/other'
    assert standin.repos['sfsc-tests/other'].branches['main'] == folder_bytes(tmp_path / 'hub')
    files = folder_bytes(tmp_path / 'hub')
    assert files['model.safetensors'] == (hub_run.run_dir / 'export' / 'model.safetensors').read_bytes()


def test_push_never_changes_the_folder_it_pushes(standin, export_copy, tmp_path, capsys):
    # an export made for another repository, with a hand-edited model card: pushing it elsewhere must not re-export
    # it in place (which dropped the edits) but say how; with --export-dir the new export goes there
    card_path = export_copy / 'README.md'
    card_path.write_text(card_path.read_text() + '\nHand-written notes on the training data.\n')
    before = folder_bytes(export_copy)
    with pytest.raises(UsageError, match=r'exported for sfsc-tests/.*not sfsc-tests/renamed.*--export-dir'):
        push(export_copy, 'sfsc-tests/renamed', latency_repeats=1)
    assert push_main([str(export_copy), '--repo-id', 'sfsc-tests/renamed']) == 2
    assert 'hand edits' in capsys.readouterr().err and standin.requests == []
    result = push(export_copy, 'sfsc-tests/renamed', export_dir=tmp_path / 'renamed', latency_repeats=1)
    assert 'exporting it for sfsc-tests/renamed into' in capsys.readouterr().out
    assert folder_bytes(export_copy) == before  # untouched, edits and all
    card = ModelCard.load(tmp_path / 'renamed' / 'README.md')
    assert result.folder == tmp_path / 'renamed' and card.data.sfsc['repo_id'] == 'sfsc-tests/renamed'
    assert standin.repos['sfsc-tests/renamed'].branches['main'] == folder_bytes(tmp_path / 'renamed')
    # pushed for its own repository, the hand-edited card goes up as it is
    push(export_copy, REPO_ID)
    assert standin.repos[REPO_ID].branches['main']['README.md'] == before['README.md']


def test_push_to_a_branch(standin, export_copy):
    push(export_copy, REPO_ID, revision='v1', commit_message='first release')
    repo = standin.repos[REPO_ID]
    assert repo.branches['v1'] == folder_bytes(export_copy) and repo.branches['main'] == {}
    assert repo.commits[-1]['branch'] == 'v1' and repo.commits[-1]['summary'] == 'first release'


def test_failed_upload_leaves_the_export_intact(standin, export_copy, capsys):
    before = folder_bytes(export_copy)
    standin.fail_commit = True
    with pytest.raises(PushError, match=r'(?s)failed while uploading the files.*simulated server failure') as err:
        push(export_copy, REPO_ID)
    assert 'is intact' in str(err.value) and str(export_copy) in str(err.value)
    assert folder_bytes(export_copy) == before
    assert standin.repos[REPO_ID].branches['main'] == {} and not standin.repos[REPO_ID].commits
    assert push_main([str(export_copy), '--repo-id', REPO_ID]) == 1  # the command line says so, without a traceback
    err = capsys.readouterr().err
    assert 'uploading the files' in err and TOKEN not in err


def test_wrong_token_is_reported_without_printing_it(standin, export_copy, monkeypatch, capsys):
    monkeypatch.setenv('HF_TOKEN', 'hf_wrong_token_fedcba9876543210')
    assert push_main([str(export_copy), '--repo-id', REPO_ID]) == 1
    err = capsys.readouterr().err
    assert 'creating the repository' in err and '401' in err
    assert 'hf_wrong_token_fedcba9876543210' not in err


def test_missing_token_is_a_clear_error_before_any_request(standin, export_copy, monkeypatch, capsys):
    monkeypatch.delenv('HF_TOKEN')
    monkeypatch.delenv('HUGGING_FACE_HUB_TOKEN', raising=False)
    with pytest.raises(PushError, match=r'No Hugging Face token found. Set HF_TOKEN.*hf auth login'):
        push(export_copy, REPO_ID)
    assert push_main([str(export_copy), '--repo-id', REPO_ID]) == 1
    assert 'No Hugging Face token' in capsys.readouterr().err
    assert standin.requests == []


@pytest.mark.parametrize('repo_id, message', [('no-namespace', 'use ORG/NAME'), ('a/b/c', 'not a valid')])
def test_bad_repo_id(standin, export_copy, repo_id, message, capsys):
    with pytest.raises(PushError, match=message):
        push(export_copy, repo_id)
    assert push_main([str(export_copy), '--repo-id', repo_id]) == 2  # bad input
    assert message in capsys.readouterr().err
    assert standin.requests == []


def test_offline_mode_is_a_clear_error(standin, export_copy, monkeypatch):
    monkeypatch.setattr('huggingface_hub.constants.HF_HUB_OFFLINE', True)
    with pytest.raises(PushError, match='HF_HUB_OFFLINE is set.*unset it to push'):
        push(export_copy, REPO_ID)
    assert standin.requests == []
