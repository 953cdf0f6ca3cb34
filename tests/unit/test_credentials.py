"""Credentials that cannot work inside a ProxyCommand fail fast with the exact command to run."""
import subprocess
import sys

from eic_proxy.errors import ExitCode


def _connect(isolated_env, config_text: str, profile: str, stdin=subprocess.DEVNULL):
    (isolated_env / ".aws").mkdir(exist_ok=True)
    (isolated_env / ".aws/config").write_text(config_text)
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # never real AWS; nothing listens here
    return subprocess.run([sys.executable, "-m", "eic_proxy", "connect", "i-0123456789abcdef0", "--profile", profile],
                          capture_output=True, text=True, env=env, stdin=stdin, timeout=60)


def _one_line(r, code):
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eic-proxy: error: ") and "Traceback" not in r.stderr
    return lines[0]


def test_sso_profile_without_login_names_the_login_command(isolated_env):
    cfg = ("[profile dev]\nsso_session = corp\nsso_account_id = 111122223333\nsso_role_name = Dev\n"
           "region = us-east-1\n\n[sso-session corp]\nsso_start_url = https://corp.awsapps.com/start\n"
           "sso_region = us-east-1\nsso_registration_scopes = sso:account:access\n")
    line = _one_line(_connect(isolated_env, cfg, "dev"), ExitCode.CREDENTIALS)
    assert "aws sso login --profile dev" in line


def test_mfa_profile_never_prompts(isolated_env):
    (isolated_env / ".aws").mkdir(exist_ok=True)
    (isolated_env / ".aws/credentials").write_text("[base]\naws_access_key_id = AKIAFAKE\n"
                                                    "aws_secret_access_key = fake\n")
    cfg = ("[profile mfa]\nrole_arn = arn:aws:iam::111122223333:role/Admin\nsource_profile = base\n"
           "mfa_serial = arn:aws:iam::111122223333:mfa/me\nregion = us-east-1\n")
    # stdin is a pipe with an answer ready: a prompt would read it; we must not
    r = _connect(isolated_env, cfg, "mfa", stdin=subprocess.PIPE)
    line = _one_line(r, ExitCode.CREDENTIALS)
    assert "MFA" in line and "never prompts" in line


def test_unknown_profile(isolated_env):
    line = _one_line(_connect(isolated_env, "[profile a]\nregion = us-east-1\n", "nope"), ExitCode.CONFIG)
    assert "nope" in line


def test_an_api_refusal_for_the_signing_time_names_the_clock_and_the_offset():
    import email.utils
    import time

    from botocore.exceptions import ClientError

    from eic_proxy.aws.errors import translate

    date = email.utils.formatdate(time.time() - 600, usegmt=True)  # AWS's time: ours is 10 minutes ahead
    for code, message in (("RequestExpired", "Request has expired."),
                          ("SignatureDoesNotMatch", "Signature not yet current: 20261205T120000Z is still later "
                                                    "than 20261205T115000Z"),
                          ("AuthFailure", "AWS was not able to validate the provided access credentials: date")):
        exc = ClientError({"Error": {"Code": code, "Message": message},
                           "ResponseMetadata": {"HTTPStatusCode": 400, "HTTPHeaders": {"date": date}}}, "DescribeInstances")
        err = translate(exc, "looking up web-1")
        assert err.exit_code == ExitCode.SIGNATURE_EXPIRED, (code, err.message)
        assert "clock is about 10 min ahead of AWS's" in err.message and "clock" in err.hint
    plain = ClientError({"Error": {"Code": "SignatureDoesNotMatch", "Message": "The request signature we calculated "
                                   "does not match the signature you provided"}}, "DescribeInstances")
    assert translate(plain, "x").exit_code != ExitCode.SIGNATURE_EXPIRED  # a wrong secret is not the clock
