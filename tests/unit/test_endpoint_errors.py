"""Close codes and handshake failures: pure policy, fed data only."""
import json

import pytest

from eic_proxy.errors import ExitCode
from eic_proxy.tunnel.endpoint_errors import ERROR_CODES, clean_text, close_error, describe_close, handshake_error


class TestClose:
    def test_normal_and_empty_close_are_clean(self):
        assert close_error(1000, "", 5, 3600) is None
        assert close_error(None, "", 5, 3600) is None

    def test_unable_to_connect_points_at_security_groups(self):
        err = close_error(1011, "Unable to connect to target", 1, 3600)
        assert err.exit_code == ExitCode.TARGET_UNREACHABLE
        assert "security group" in err.hint and "1011 (internal error)" in err.message

    def test_close_near_max_duration_is_expiry_whatever_the_code(self):
        err = close_error(1000, "", 59.5, 60)
        assert err.exit_code == ExitCode.TUNNEL_EXPIRED and "ControlPersist" in err.hint
        assert close_error(1000, "", 0.3, 2) is None  # a short limit leaves a proportional margin

    def test_other_codes_carry_code_and_reason(self):
        err = close_error(4000, "custom", 1, None)
        assert err.exit_code == ExitCode.TUNNEL_CLOSED and "4000" in err.message and "custom" in err.message

    def test_describe_close(self):
        assert describe_close(1011, "x") == "1011 (internal error) x"
        assert describe_close(None, "") == "no close code"


class TestHandshake:
    def body(self, code, msg):
        return json.dumps({"ErrorCode": code, "Message": msg}).encode()

    def test_signature_mismatch(self):
        e = handshake_error(403, self.body("InvalidSignatureException", "The request signature we calculated "
                                                                        "does not match"))
        assert e.exit_code == ExitCode.SIGNATURE_REJECTED and "does not match" in e.message

    def test_expired(self):
        e = handshake_error(403, self.body("AccessDeniedException", "Request has expired"))
        assert e.exit_code == ExitCode.SIGNATURE_EXPIRED and "clock" in e.hint

    def test_access_denied_mentions_max_tunnel_duration_when_not_sent(self):
        msg = "User: arn:aws:iam::1:user/x is not authorized to perform: ec2-instance-connect:OpenTunnel"
        e = handshake_error(403, self.body("AccessDeniedException", msg))
        assert e.exit_code == ExitCode.ACCESS_DENIED and "--max-tunnel-duration" in e.hint
        e2 = handshake_error(403, self.body("AccessDeniedException", msg), max_duration_sent=True)
        assert "--max-tunnel-duration" not in e2.hint

    def test_invalid_port(self):
        e = handshake_error(400, self.body("InvalidParameter", "The specified RemotePort is not valid."))
        assert e.exit_code == ExitCode.HANDSHAKE_REJECTED and "RemotePort" in e.message

    def test_throttled_and_5xx_are_retryable_class(self):
        assert handshake_error(429, b"").exit_code == ExitCode.SERVICE_UNAVAILABLE
        assert handshake_error(503, b"<html>").exit_code == ExitCode.SERVICE_UNAVAILABLE

    def test_garbage_body_is_tolerated(self):
        e = handshake_error(418, b"\xff\xfe not json")
        assert "HTTP 418" in e.message


    def test_error_code_decides_not_words_in_the_message(self):
        e = handshake_error(400, self.body("SomethingNew", "this client does not support that"))
        assert e.exit_code == ExitCode.HANDSHAKE_REJECTED and "22 and 3389" not in e.hint
        e = handshake_error(403, self.body("ThrottlingException", "signature limit"))
        assert e.exit_code == ExitCode.SERVICE_UNAVAILABLE

    @pytest.mark.parametrize("code", sorted(ERROR_CODES))
    def test_every_code_in_the_table_has_a_class_and_a_hint(self, code):
        e = handshake_error(400, self.body(code, "m"))
        assert e.exit_code == ERROR_CODES[code][0] and e.hint

    def test_expired_session_token_is_a_credentials_error(self):
        e = handshake_error(403, self.body("ExpiredTokenException", "The security token included in the request is "
                                                                   "expired"))
        assert e.exit_code == ExitCode.CREDENTIALS and "sso login" in e.hint

    def test_hostile_message_is_escaped_and_capped(self):
        e = handshake_error(403, self.body("AccessDeniedException", "\x1b]0;pwned\x07\nline2" + "A" * 5000))
        assert "\x1b" not in e.message and "\n" not in e.message and len(e.message) < 500


def test_clean_text():
    assert clean_text("a\x1b[31mb\r\nc\u202ed") == "a\\x1b[31mb\\x0d\\x0ac\\u202ed"
    assert clean_text("x" * 400).endswith("…") and len(clean_text("x" * 400)) == 301
