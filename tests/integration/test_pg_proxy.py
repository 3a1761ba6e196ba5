"""End-to-end PostgreSQL tests through nerava-proxy ($NERAVA_PROXY_BIN) against a real primary
and streaming replica. In this issue every session runs on the node that is primary, so results
are compared with the same thing done directly against the primary.

Every client call is bounded (connect_timeout, subprocess timeout, socket timeouts, and the
per-test SIGALRM limit in conftest.py): a hang fails the test.
"""

from __future__ import annotations

import hashlib
import random
import re
import struct
import subprocess
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors
from psycopg.pq import TransactionStatus

from tests.harness import pgwire
from tests.harness.topology import APP_DB, APP_PASSWORD, APP_USER
from conftest import start_proxy

CMD_TIMEOUT = 60


def connect(proxy, **kwargs) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(**kwargs), autocommit=True)


def direct(topology, **kwargs) -> psycopg.Connection:
    pg = topology.pg
    return psycopg.connect(pg.dsn(pg.primary, user=APP_USER, dbname=APP_DB, connect_timeout=10,
                                  **kwargs), autocommit=True)


def psql(proxy, *args: str, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
    res = subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", *args],
                         env=proxy.pg_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"psql {args} failed ({res.returncode}): {res.stderr}"
    return res


# ---------------------------------------------------------------------------- command-line tools


def test_psql_select_1(proxy):
    assert psql(proxy, "-c", "select 1").stdout.strip() == "1"


@pytest.fixture(scope="module")
def pgbench_initialized(proxy):
    res = subprocess.run(["pgbench", "-i", "-s", "1"], env=proxy.pg_env(), capture_output=True,
                         text=True, timeout=180)
    assert res.returncode == 0, f"pgbench -i failed ({res.returncode}):\n{res.stderr}"
    return res


def test_pgbench_init(pgbench_initialized, topology):
    with direct(topology) as conn:
        assert conn.execute("select count(*) from pgbench_accounts").fetchone() == (100000,)
        assert conn.execute("select count(*) from pgbench_branches").fetchone() == (1,)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_run(proxy, pgbench_initialized, mode):
    res = subprocess.run(["pgbench", "-c", "4", "-j", "2", "-T", "5", "-M", mode],
                         env=proxy.pg_env(), capture_output=True, text=True, timeout=90)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"pgbench -M {mode} exited {res.returncode}:\n{out}"
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert processed and failed, f"unexpected pgbench output:\n{out}"
    assert int(failed.group(1)) == 0, out
    assert int(processed.group(1)) > 0, out
    assert "aborted" not in out, out


def test_psql_backslash_copy(proxy, topology, tmp_path):
    src, dst = tmp_path / "in.csv", tmp_path / "out.csv"
    # Written the way COPY ... CSV writes it (quotes only where needed), so out == in.
    src.write_text("".join(f'{i},"row, {i}",{"x" * (i % 7)}\n' for i in range(1, 1001)))
    psql(proxy, "-c", "create table psql_copy(id int primary key, t text, pad text)")
    out = psql(proxy, "-c", f"\\copy psql_copy from '{src}' with (format csv)").stdout
    assert out.strip() == "COPY 1000"
    # Each psql is a new session, and read-your-writes is per session: the next psql reads
    # from the replica, so let the replica replay the COPY first, as a user would have to.
    replica = topology.pg.replicas[0]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if topology.pg.sql(replica, "select count(*) from psql_copy", dbname=APP_DB)[0][0] \
                    == 1000:
                break
        except Exception:  # noqa: BLE001 - the table itself may not have replayed yet
            pass
        time.sleep(0.05)
    psql(proxy, "-c",
         f"\\copy (select * from psql_copy order by id) to '{dst}' with (format csv)")
    assert dst.read_bytes() == src.read_bytes()
    with direct(topology) as conn:
        assert conn.execute("select count(*) from psql_copy").fetchone() == (1000,)


# ---------------------------------------------------------------------------- extended protocol


def test_psycopg_server_side_parameters(proxy):
    with connect(proxy) as conn:
        assert conn.execute("select %s::int + %s", (1, 2)).fetchone() == (3,)
        row = conn.execute("select %s::text, %s::bytea, %s::int, %s::text is null",
                           ("héllo", b"\x00\x01\xff", 7, None)).fetchone()
        assert row == ("héllo", b"\x00\x01\xff", 7, True)
        # Binary results over the extended protocol.
        cur = conn.cursor(binary=True)
        assert cur.execute("select %s::int8 * 2, %s::numeric",
                           (2 ** 40, Decimal("1.5"))).fetchone() == (2 ** 41, Decimal("1.5"))


def test_psycopg_prepare_true(proxy):
    with connect(proxy) as conn:
        for i in range(5):
            assert conn.execute("select %s::int * 2", (i,), prepare=True).fetchone() == (2 * i,)
        rows = conn.execute("select statement from pg_prepared_statements").fetchall()
        assert any("$1::int * 2" in r[0] for r in rows), rows
        # Same statement again after an unrelated query still uses the prepared one.
        conn.execute("select 'unrelated'")
        assert conn.execute("select %s::int * 2", (21,), prepare=True).fetchone() == (42,)


def test_psycopg_pipeline(proxy):
    with connect(proxy) as conn:
        conn.execute("create temp table pl(x int)")
        with conn.pipeline():
            for i in range(100):
                conn.execute("insert into pl values (%s)", (i,))
            cur = conn.execute("select count(*), sum(x) from pl")
            other = conn.execute("select %s::text || %s", ("a", "b"))
        assert cur.fetchone() == (100, 4950)
        assert other.fetchone() == ("ab",)
        # An error inside a pipeline aborts everything up to Sync (one implicit transaction,
        # so the insert before it is rolled back too); the connection carries on.
        with pytest.raises(errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("insert into pl values (1000)")
                conn.execute("select 1 / 0")
                conn.execute("insert into pl values (2000)")
        assert conn.execute("select count(*) from pl where x >= 1000").fetchone() == (0,)
        assert conn.execute("select 'alive'").fetchone() == ("alive",)


def test_multi_statement_simple_query(proxy, topology):
    with connect(proxy) as conn:
        cur = conn.cursor()
        cur.execute("select 1 as a; select 'two' as b; select 3 as c")  # no params: simple query
        results = [cur.fetchall()]
        while cur.nextset():
            results.append(cur.fetchall())
        assert results == [[(1,)], [("two",)], [(3,)]]
        conn.execute("create table multi_stmt(x int)")
        # One simple Query is one implicit transaction: an error rolls back all of it.
        with pytest.raises(errors.DivisionByZero):
            conn.execute("insert into multi_stmt values (1); select 1 / 0; "
                         "insert into multi_stmt values (2)")
        conn.execute("insert into multi_stmt values (3); insert into multi_stmt values (4)")
    with direct(topology) as d:
        assert d.execute("select array_agg(x order by x) from multi_stmt").fetchone() == (
            [3, 4],)


# ---------------------------------------------------------------------------- COPY


def test_copy_100k_rows_in_and_out_checksum(proxy, topology):
    rows = b"".join(f"{i}\tname-{i}\t{(i * 7919) % 100003}\t\\N\n".encode()
                    for i in range(100000))
    with connect(proxy) as conn:
        conn.execute("create table copy_big(id int primary key, name text, n int, z text)")
        with conn.cursor().copy("copy copy_big from stdin") as cp:
            for off in range(0, len(rows), 65536):
                cp.write(rows[off:off + 65536])
        assert conn.execute("select count(*) from copy_big").fetchone() == (100000,)
        via_proxy = hashlib.md5()
        with conn.cursor().copy("copy (select * from copy_big order by id) to stdout") as cp:
            for chunk in cp:
                via_proxy.update(chunk)
        # The connection is in a clean state after COPY OUT.
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("select 1").fetchone() == (1,)
    with direct(topology) as conn:
        via_direct = hashlib.md5()
        with conn.cursor().copy("copy (select * from copy_big order by id) to stdout") as cp:
            for chunk in cp:
                via_direct.update(chunk)
    assert via_proxy.hexdigest() == via_direct.hexdigest()
    assert via_proxy.hexdigest() == hashlib.md5(rows).hexdigest()


def test_copy_from_stdin_error_keeps_connection(proxy):
    with connect(proxy) as conn:
        conn.execute("create temp table copy_bad(x int)")
        with pytest.raises(errors.InvalidTextRepresentation):
            with conn.cursor().copy("copy copy_bad from stdin") as cp:
                cp.write(b"1\n2\nnot-a-number\n")
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("select count(*) from copy_bad").fetchone() == (0,)


# ---------------------------------------------------------------------------- async messages


def test_listen_notify_between_two_connections(proxy):
    with connect(proxy) as listener, connect(proxy) as notifier:
        got = []
        listener.add_notify_handler(got.append)
        listener.execute("listen nerava_chan")
        notifier.execute("notify nerava_chan, 'hello'")
        notifier.execute("select pg_notify('nerava_chan', 'second')")
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            listener.execute("select 1")  # notifications are read along with replies
            time.sleep(0.05)
        assert [(n.channel, n.payload) for n in got] == [("nerava_chan", "hello"),
                                                         ("nerava_chan", "second")]


def test_notice_arrives(proxy):
    with connect(proxy) as conn:
        notices = []
        # A Diagnostic is only valid inside the callback: copy the fields out.
        conn.add_notice_handler(
            lambda d: notices.append((d.severity, d.sqlstate, d.message_primary)))
        conn.execute("do $$ begin raise notice 'hello %', 42; end $$")
        assert notices == [
            ("NOTICE", "00000", "hello 42")]


# ---------------------------------------------------------------------------- session semantics


def test_startup_parameters_arrive_verbatim(proxy):
    with connect(proxy, application_name="nerava it/app",
                 options="-c search_path=foo -c TimeZone=Asia/Tokyo") as conn:
        assert conn.execute("show search_path").fetchone() == ("foo",)
        assert conn.execute("show timezone").fetchone() == ("Asia/Tokyo",)
        assert conn.execute("show application_name").fetchone() == ("nerava it/app",)
        assert conn.info.parameter_status("application_name") == "nerava it/app"
        assert conn.info.parameter_status("TimeZone") == "Asia/Tokyo"
        assert conn.execute("select current_user, current_database()").fetchone() == (
            APP_USER, APP_DB)


def test_parameter_status_equals_direct(proxy, topology):
    params = {"application_name": "ps-compare", "options": "-c TimeZone=Europe/Paris",
              "DateStyle": "SQL, DMY"}
    seen = {}
    for target, (host, port) in {"proxy": (proxy.host, proxy.pg_port),
                                 "direct": (topology.pg.primary.host,
                                            topology.pg.primary.port)}.items():
        with pgwire.RawPg(host, port) as c:
            seen[target] = c.startup(APP_USER, APP_PASSWORD, APP_DB, **params).parameters
    assert seen["proxy"] == seen["direct"]
    assert seen["proxy"]["DateStyle"] == "SQL, DMY"
    assert seen["proxy"]["TimeZone"] == "Europe/Paris"


def test_session_state_persists_across_statements(proxy, topology):
    with direct(topology) as d:
        d.execute("do $$ begin create role nerava_it_reader; exception when duplicate_object "
                  "then null; end $$")
    with connect(proxy) as conn, direct(topology) as other:
        conn.execute("set work_mem = '7MB'")
        conn.execute("create temp table session_tt(x int)")
        # The temp table pins the session to the primary: from here on one server session.
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        conn.execute("insert into session_tt values (1), (2)")
        conn.execute("select pg_advisory_lock(4242)")
        for _ in range(3):
            assert conn.execute("show work_mem").fetchone() == ("7MB",)
            assert conn.execute("select count(*) from session_tt").fetchone() == (2,)
            assert conn.execute("select pg_backend_pid()").fetchone() == (pid,)
        # The lock is held by that server session: another session cannot take it.
        assert other.execute("select pg_try_advisory_lock(4242)").fetchone() == (False,)
        conn.execute("set role nerava_it_reader")
        assert conn.execute("select current_user, session_user").fetchone() == (
            "nerava_it_reader", APP_USER)
        assert conn.execute("select current_user").fetchone() == ("nerava_it_reader",)
        conn.execute("reset role")
        assert conn.execute("select pg_advisory_unlock(4242)").fetchone() == (True,)
        assert other.execute("select pg_try_advisory_lock(4242)").fetchone() == (True,)
        other.execute("select pg_advisory_unlock(4242)")


def test_transaction_status(proxy, topology):
    with connect(proxy) as conn:
        assert conn.info.transaction_status == TransactionStatus.IDLE
        conn.execute("begin")
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        with pytest.raises(errors.DivisionByZero):
            conn.execute("select 1 / 0")
        assert conn.info.transaction_status == TransactionStatus.INERROR
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.execute("rollback")
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("select 1").fetchone() == (1,)
        # A committed transaction is visible to everyone.
        conn.execute("create table tx_status(x int)")
        conn.execute("begin")
        conn.execute("insert into tx_status values (1)")
        with direct(topology) as d:
            assert d.execute("select count(*) from tx_status").fetchone() == (0,)
            conn.execute("commit")
            assert d.execute("select count(*) from tx_status").fetchone() == (1,)


def test_cancel_pg_sleep_within_one_second(proxy):
    with connect(proxy) as conn:
        cancelled_at = []

        def cancel():
            cancelled_at.append(time.monotonic())
            conn.cancel()

        timer = threading.Timer(0.5, cancel)
        timer.start()
        try:
            with pytest.raises(errors.QueryCanceled) as exc:
                conn.execute("select pg_sleep(10)")
            answered = time.monotonic()
        finally:
            timer.cancel()
        assert exc.value.sqlstate == "57014"
        assert cancelled_at and answered - cancelled_at[0] < 1.0, (
            f"cancel answered after {answered - cancelled_at[0]:.2f}s")
        assert conn.execute("select 'still usable'").fetchone() == ("still usable",)


# ---------------------------------------------------------------------------- authentication


def _failed_login(proxy, user, password):
    with pgwire.RawPg(proxy.host, proxy.pg_port) as c:
        with pytest.raises(pgwire.ServerError) as exc:
            c.startup(user, password, APP_DB)
        c.wait_closed()
    return exc.value


def test_wrong_password_is_28P01(proxy):
    err = _failed_login(proxy, APP_USER, "wrong-password")
    assert err.sqlstate == "28P01", err
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(proxy, password="wrong-password")


def test_unknown_user_is_28P01_and_indistinguishable(proxy):
    unknown = _failed_login(proxy, "no_such_user", "whatever")
    wrong = _failed_login(proxy, APP_USER, "wrong-password")
    assert unknown.sqlstate == "28P01", unknown
    # Nothing may tell "no such user" from "wrong password": same code, same message shape,
    # same sequence of authentication messages.
    assert unknown.message.replace("no_such_user", "U") == wrong.message.replace(APP_USER, "U")
    assert unknown.result.kinds == wrong.result.kinds
    assert "exist" not in unknown.message


def test_correct_login_through_raw_scram(proxy):
    with pgwire.RawPg(proxy.host, proxy.pg_port) as c:
        res = c.startup(APP_USER, APP_PASSWORD, APP_DB)
        assert res.kinds[0] == "R10" and res.kinds[-2:] == ["R0", "Z"]
        assert res.backend_key is not None
        msgs = c.query("select 6 * 7")
        assert [k for k, _ in msgs] == [b"T", b"D", b"C", b"Z"]


# ---------------------------------------------------------------------------- TLS


def test_tls_sslmode_require(topology, self_signed_cert):
    cert, key = self_signed_cert
    with start_proxy(topology, postgres={"tls": {"cert": cert, "key": key}}) as p:
        with pgwire.RawPg(p.host, p.pg_port) as c:
            assert c.ssl_request() == b"S"
        with psycopg.connect(p.dsn(sslmode="require"), autocommit=True) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("select 1").fetchone() == (1,)
            # Large results over TLS (many records).
            assert conn.execute("select count(*), sum(length(repeat('x', g))) from "
                                "generate_series(1, 2000) g").fetchone() == (2000, 2001000)


def test_without_tls_require_fails_and_prefer_works(proxy):
    with pgwire.RawPg(proxy.host, proxy.pg_port) as c:
        assert c.ssl_request() == b"N"
    with pytest.raises(psycopg.OperationalError, match="(?i)ssl"):
        connect(proxy, sslmode="require")
    with connect(proxy, sslmode="prefer") as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)


# ---------------------------------------------------------------------------- garbage input


@pytest.fixture
def bystander(proxy):
    """A healthy session that must be unaffected by another client's garbage."""
    with connect(proxy) as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        yield conn
        assert conn.execute("select pg_backend_pid()").fetchone() == (pid,)
        assert conn.execute("select 'unaffected'").fetchone() == ("unaffected",)


def _random(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


GARBAGE_STARTUP = {
    "oversized-length": struct.pack("!II", 0x7FFFFFFF, pgwire.PROTOCOL_3_0),
    "too-short": struct.pack("!I", 3),
    "unterminated": struct.pack("!II", 64, pgwire.PROTOCOL_3_0) + bytes(range(1, 57)),
    "random-body": struct.pack("!II", 44, pgwire.PROTOCOL_3_0) + _random(1, 35) + b"\xff",
}


@pytest.mark.parametrize("packet", GARBAGE_STARTUP.values(), ids=GARBAGE_STARTUP.keys())
def test_garbage_startup_gets_08P01_and_close(proxy, bystander, packet):
    with pgwire.RawPg(proxy.host, proxy.pg_port) as c:
        c.send(packet)
        err = c.read_error()
        assert err.sqlstate == "08P01", err
        c.wait_closed()
    assert bystander.execute("select 1").fetchone() == (1,)


GARBAGE_AFTER_AUTH = {
    "oversized-header": b"Q" + struct.pack("!I", 0x7FFFFFFF),
    "length-below-4": b"Q" + struct.pack("!I", 2),
    "unknown-type": pgwire.message(b"\xfe", b"garbage!"),
    "random-bytes": b"\x00" + _random(2, 63),
}


@pytest.mark.parametrize("data", GARBAGE_AFTER_AUTH.values(), ids=GARBAGE_AFTER_AUTH.keys())
def test_garbage_after_auth_gets_08P01_and_close(proxy, bystander, data):
    with pgwire.RawPg(proxy.host, proxy.pg_port) as c:
        c.startup(APP_USER, APP_PASSWORD, APP_DB)
        assert [k for k, _ in c.query("select 1")][-1] == b"Z"
        c.send(data)
        err = c.read_error()
        assert err.sqlstate == "08P01", err
        c.wait_closed()
    assert bystander.execute("select 1").fetchone() == (1,)
