"""Egress policy: rule parsing, decisions, ``[outbound]`` config, and refused connects in a
real sandbox (PermissionError naming destination and rule, logged by the host)."""
from __future__ import annotations

import logging

import pytest

from _net import http_server
from pyworkers.config import ConfigError, load_worker_config
from pyworkers.runtime.egress import DEFAULT, EgressError, Policy, Rule, address_class


@pytest.mark.parametrize("ip,why", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"),
    ("::", "unspecified"), ("100.64.0.1", "private"), ("::ffff:127.0.0.1", "loopback"),
    ("224.0.0.1", "multicast"), ("93.184.215.14", None), ("2606:4700::1111", None),
])
def test_address_classes(ip, why):
    import ipaddress

    assert address_class(ipaddress.ip_address(ip)) == why


def test_default_policy_allows_public_and_refuses_local_addresses():
    assert DEFAULT.check("93.184.215.14", 443).allowed
    for ip in ("127.0.0.1", "10.0.0.5", "192.168.0.10", "169.254.169.254", "fc00::5", "fe80::2",
               "0.0.0.0", "::1"):
        d = DEFAULT.check(ip, 80)
        assert not d.allowed and d.rule.startswith("default policy:"), ip
    assert DEFAULT.check("169.254.169.254", 80).rule == "default policy: link-local address"


def test_allow_list_deny_wins_names_cidr_and_ports():
    p = Policy.build(allow=["api.example.com:443", "*.internal.example:5432", "127.0.0.1:*",
                            "10.0.0.0/8:6379", "[::1]:8080"],
                     deny=["10.9.0.0/16"])
    assert p.check("127.0.0.1", 1234).allowed
    assert p.check("10.1.2.3", 6379).allowed
    assert not p.check("10.1.2.3", 6380).allowed
    d = p.check("10.9.1.1", 6379)
    assert not d.allowed and d.rule == "deny rule '10.9.0.0/16'"
    # name rules match the names the guest resolved to the address
    assert p.check("10.20.0.7", 5432, ["db.internal.example"]).allowed
    assert not p.check("10.20.0.7", 5432, ["db.other.example"]).allowed
    assert p.check("93.184.215.14", 443, ["API.example.com"]).allowed
    assert not p.check("93.184.215.14", 80, ["api.example.com"]).allowed
    # with an allow list, anything else is refused, even public addresses
    d = p.check("93.184.215.14", 443)
    assert not d.allowed and d.rule == "no [outbound] allow rule matches"
    assert p.check("::1", 8080).allowed and not p.check("::1", 8081).allowed


def test_public_keyword_keeps_the_default_and_adds_services():
    p = Policy.build(allow=["@public", "127.0.0.1:6379"])
    assert p.check("93.184.215.14", 443).allowed
    assert p.check("127.0.0.1", 6379).allowed
    assert not p.check("127.0.0.1", 22).allowed
    assert not p.check("169.254.169.254", 80).allowed


@pytest.mark.parametrize("bad", ["", "host:0", "host:http", "1.2.3.4:99999", "[::1", "a/b/c", "ho st"])
def test_malformed_rules_are_refused_with_the_rule_named(bad):
    with pytest.raises(EgressError) as ei:
        Rule.parse(bad)
    assert repr(bad) in str(ei.value)


def test_extended_adds_server_overrides():
    p = Policy.build(allow=["127.0.0.1:80"]).extended(allow=["127.0.0.1:81"], deny=["127.0.0.1:80"])
    assert p.check("127.0.0.1", 81).allowed and not p.check("127.0.0.1", 80).allowed
    assert Policy.from_json(p.to_json()) == p


def test_outbound_config_is_parsed_and_errors_name_file_and_key(tmp_path):
    app = tmp_path / "app"
    (app / "certs").mkdir(parents=True)
    (app / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    toml = app / "pyworkers.toml"
    toml.write_text('[outbound]\nallow = ["127.0.0.1:6379", "@public"]\ndeny = ["10.0.0.0/8"]\n'
                    'ca_certificates = "certs/ca.pem"\nmax_sockets = 8\n')
    cfg = load_worker_config(app)
    pol = cfg.egress_policy()
    assert pol.max_sockets == 8 and "BEGIN CERTIFICATE" in pol.ca_pem
    assert pol.check("127.0.0.1", 6379).allowed and not pol.check("10.0.0.1", 80).allowed
    for text, key in [('[outbound]\nallow = "x"\n', "outbound.allow"),
                      ('[outbound]\nallow = ["a:b:c:d/9"]\n', "outbound.allow"),
                      ('[outbound]\nalow = []\n', "outbound.alow"),
                      ('[outbound]\nmax_sockets = 0\n', "outbound.max_sockets")]:
        toml.write_text(text)
        with pytest.raises(ConfigError) as ei:
            load_worker_config(app)
        assert str(ei.value).startswith(f"{toml}: {key}:"), str(ei.value)
    toml.write_text('[outbound]\nca_certificates = "certs/missing.pem"\n')
    with pytest.raises(ConfigError) as ei:
        load_worker_config(app).egress_policy()
    assert "outbound.ca_certificates" in str(ei.value) and "missing.pem" in str(ei.value)


# ------------------------------------------------------------------------ in the sandbox
CONNECT = """
import socket
def attempt(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return "connected"
    except PermissionError as e:
        return "PermissionError: " + str(e)
    except OSError as e:
        return type(e).__name__ + ": " + str(e)
"""


@pytest.mark.slow
def test_default_policy_refuses_loopback_private_and_metadata_in_the_guest(runtime_314, caplog):
    from pyworkers.runtime import Isolate

    with http_server() as port, Isolate(runtime_314) as iso, \
            caplog.at_level(logging.WARNING, logger="pyworkers.egress"):
        iso.run(CONNECT)
        for host in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.169.254"):
            out = iso.call("__main__:attempt", host, port)
            assert out.startswith("PermissionError: [Errno "), out  # the guest's EACCES
            assert (f"outbound connection to {host}:{port} refused by the egress policy: "
                    "default policy: ") in out, out
        assert "link-local address" in iso.call("__main__:attempt", "169.254.169.254", 80)
        # a name that resolves to a denied address is refused on the address, naming the name
        out = iso.call("__main__:attempt", "localhost", port)
        assert "PermissionError" in out and "(localhost)" in out and "loopback address" in out
    assert any("refused by the egress policy" in r.getMessage() and "169.254.169.254" in r.getMessage()
               for r in caplog.records)


@pytest.mark.slow
def test_allow_and_deny_patterns_in_the_guest(runtime_314):
    from pyworkers.runtime import Isolate

    with http_server() as port, http_server() as other:
        pol = Policy.build(allow=[f"127.0.0.1:{port}", f"localhost:{other}"],
                           deny=[f"127.0.0.1:{other}"])
        with Isolate(runtime_314, egress=pol) as iso:
            iso.run(CONNECT)
            assert iso.call("__main__:attempt", "127.0.0.1", port) == "connected"
            out = iso.call("__main__:attempt", "127.0.0.1", other)
            assert out.endswith(f"deny rule '127.0.0.1:{other}' (configure [outbound] allow/deny "
                                "in pyworkers.toml)"), out
            out = iso.call("__main__:attempt", "localhost", other)  # deny wins over a name allow
            assert "deny rule" in out
            # the policy can be swapped on a live isolate (what serve does after a restore)
            iso.host.egress = Policy.build(allow=["localhost"])
            assert iso.call("__main__:attempt", "localhost", other) == "connected"
            # name rules match the addresses the guest resolved that name to (localhost ->
            # 127.0.0.1 here), whichever way it then connects; other addresses are refused
            assert iso.call("__main__:attempt", "127.0.0.1", port) == "connected"
            assert "no [outbound] allow rule matches" in iso.call("__main__:attempt", "127.0.0.2", port)


@pytest.mark.slow
def test_pyworkers_python_takes_outbound_rules(runtime_314):
    import subprocess
    import sys

    code = ("import urllib.request\n"
            "try:\n    print(urllib.request.urlopen('http://127.0.0.1:{p}/cli').read())\n"
            "except OSError as e:\n    print('refused', e)\n")
    with http_server() as port:
        run = lambda *a: subprocess.run([sys.executable, "-m", "pyworkers", "python", *a, "-c",  # noqa: E731
                                         code.format(p=port)], capture_output=True, text=True,
                                        timeout=120)
        assert run().stdout.startswith("refused <urlopen error [Errno 2] outbound connection to "
                                       f"127.0.0.1:{port} refused")
        assert run("--outbound-allow", f"127.0.0.1:{port}").stdout == "b'hello from /cli'\n"
        bad = run("--outbound-deny", "a/b/c")
        assert bad.returncode != 0 and "egress rule 'a/b/c'" in bad.stderr
