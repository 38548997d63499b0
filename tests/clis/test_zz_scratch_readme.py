"""SCRATCH (to be deleted): the README's minimal settings, nothing else, against the gateway."""
from __future__ import annotations
import json, os, shutil, tempfile
from pathlib import Path
import pytest
from channels_app.models import Channel, ProviderKind
from tests.clis import harness
from tests.clis.test_through_gateway import CASES, _deciding
from tests.fakes.fixtures import *  # noqa
from tests.gateway.conftest import gateway_server  # noqa

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

def minimal_env(home, proxy, extra):
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
           "NO_PROXY": harness.LOOPBACK, "no_proxy": harness.LOOPBACK}
    for k in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env[k] = proxy
    env.update(extra)
    return env

@pytest.mark.parametrize("variant", os.environ.get("VARIANTS", "claude,codex,gemini").split(","))
def test_readme(variant, request, gateway_server, recording_server, alice, cli_cwd):
    cli = variant.split("-")[0]
    case = next(p.values[0] for p in CASES if p.values[0].cli == cli)
    exe = str(harness.ensure_cli(cli))
    fake = request.getfixturevalue(case.fake)
    decisions = []
    fake.script.api_key = case.secret
    fake.script.responder = _deciding(case.model_of(case.shell), decisions)
    Channel.objects.create(team=alice.team, kind=case.kind, name="x", base_url=fake.base_url, secret=case.secret,
                           served_models=[{"name": case.upstream_model, "alias": case.model}])
    home = Path(tempfile.mkdtemp(dir=harness._homes_root()))
    url = gateway_server.url
    key = alice.raw_key
    prompt = "Run the CliRelay proof command with your shell tool, then tell me exactly what it printed."
    if cli == "claude":
        extra = {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": key}
        if "nonessential" not in variant:
            extra["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
        argv = [exe, "-p", prompt, "--model", case.model, "--allowedTools", "Bash"]
    elif cli == "codex":
        (home / ".codex").mkdir()
        (home / ".codex" / "config.toml").write_text(f'''model = "{case.model}"
model_provider = "clirelay"

[model_providers.clirelay]
name = "CliRelay"
base_url = "{url}/v1"
env_key = "CLIRELAY_API_KEY"
wire_api = "responses"
''')
        extra = {"CLIRELAY_API_KEY": key}
        argv = [exe, "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", prompt]
    else:
        if "nosettings" not in variant:
            (home / ".gemini").mkdir()
            (home / ".gemini" / "settings.json").write_text(json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}}))
        extra = {"GOOGLE_GEMINI_BASE_URL": url, "GEMINI_API_KEY": key}
        argv = [exe, "-p", prompt, "--yolo", "-m", case.model]
    env = minimal_env(home, recording_server.url, extra)
    result = harness._run(argv, env, cli_cwd, 120, home)
    shutil.rmtree(home, ignore_errors=True)
    print("\n=====", variant, result.describe(), decisions)
    print("LEAKS", [(r.method, r.path) for r in recording_server.leaks])
