"""The real FreeRADIUS (Debian's ``freeradius`` 3.2) in a network namespace, for any test that
needs an AAA server (a helper module, not a test file).

:class:`FreeRadius` copies the packaged configuration (``/etc/freeradius/3.0``) to a private
directory and replaces what a test must control:

* ``clients.conf``: one client (a network, by default the whole TEST-NET-1) with the shared
  secret and ``require_message_authenticator = yes``.
* With ``coa_target``, the RFC 5176 side: the NAS as a CoA/Disconnect destination of
  FreeRADIUS (``home_server`` of ``type = coa`` and its pool, both named ``pptpkit-coa``, in
  ``proxy.conf``) with ``coa_secret``; tests that only need to send a Disconnect-Request use
  :meth:`FreeRadius.radclient`.
* ``mods-config/files/authorize``: the users, each with ``Cleartext-Password`` or
  ``NT-Password`` and reply attributes in FreeRADIUS syntax.
* ``mods-enabled``: only the modules these tests use; ``mschap`` with ``use_mppe = yes``,
  ``require_encryption = yes`` and ``require_strong = yes`` (128-bit keys in the Accept);
  ``detail`` writing every accounting request to one file, :attr:`FreeRadius.detail_path`.
* ``sites-enabled/pptpkit``: one virtual server with auth and acct listeners on the address.

It runs as ``freeradius -X -d DIR`` (foreground, debug output in :attr:`log_path`), inside the
namespace through :class:`NetnsLab` (so the lab's teardown kills it too), and :meth:`start`
returns once it prints ``Ready to process requests``.  Secrets go into the config files only
(mode 0600), never onto a command line.  radclient is used the same way: :meth:`radclient`
writes the secret into a file passed with ``-S``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from netns import NetnsLab

PACKAGED_CONFIG = Path("/etc/freeradius/3.0")
MODULES = ("always", "attr_filter", "chap", "expr", "files", "pap", "preprocess")


def nt_hash(password: str) -> str:
    """The NT-Password value (MD4 of UTF-16LE) as FreeRADIUS wants it in the users file."""
    from pptpkit.crypto.mschap import nt_password_hash

    return "0x" + nt_password_hash(password).hex()


@dataclass(frozen=True)
class User:
    name: str
    password: str
    #: Store only the NT hash (NT-Password), as a Windows-style back end would.
    nt_only: bool = False
    #: Reply attributes, FreeRADIUS syntax: ``('Framed-IP-Address', '198.51.100.20')``.
    reply: Sequence[tuple[str, str]] = ()


@dataclass
class FreeRadius:
    lab: NetnsLab
    namespace: str
    address: str
    workdir: Path
    secret: str
    users: Sequence[User]
    clients_network: str = "192.0.2.0/24"
    coa_target: tuple[str, int] | None = None
    coa_secret: str = "coa-secret-4711"
    #: Put a Message-Authenticator in every Access-Accept/Reject.  Debian 12's 3.2.1 predates
    #: the Blast-RADIUS release (3.2.5), which does it always; on 3.2.1 a reply gets one only when
    #: the policy adds the attribute (FreeRADIUS then computes it), the advisory's workaround.
    reply_message_authenticator: bool = True
    auth_port: int = 1812
    acct_port: int = 1813
    #: A shared address pool (FreeRADIUS's sqlippool on SQLite): every Access-Accept gets a
    #: Framed-IP-Address from these, leases are renewed by accounting, released by Stop, and
    #: all of one NAS's (NAS-IP-Address) cleared by its Accounting-On/Off.
    ippool: Sequence[str] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def confdir(self) -> Path:
        return self.workdir / "raddb"

    @property
    def log_path(self) -> Path:
        return self.workdir / "freeradius.log"

    @property
    def detail_path(self) -> Path:
        return self.workdir / "radacct" / "detail"

    # -- configuration ---------------------------------------------------------------------

    @property
    def ippool_db(self) -> Path:
        return self.workdir / "ippool.sqlite"

    def leases(self) -> dict[str, tuple[str, str]]:
        """Addresses leased now: address -> (NAS-IP-Address, user)."""
        import sqlite3

        with sqlite3.connect(self.ippool_db) as db:
            rows = db.execute("SELECT framedipaddress, nasipaddress, username FROM radippool "
                              "WHERE expiry_time > datetime('now')").fetchall()
        return {ip: (nas, user) for ip, nas, user in rows}

    def _write_ippool(self, d: Path) -> None:
        import sqlite3

        if self.ippool_db.exists():
            self.ippool_db.unlink()
        with sqlite3.connect(self.ippool_db) as db:
            db.execute("CREATE TABLE radippool (id INTEGER PRIMARY KEY, pool_name TEXT NOT NULL, "
                       "framedipaddress TEXT NOT NULL, nasipaddress TEXT NOT NULL DEFAULT '', "
                       "calledstationid TEXT NOT NULL DEFAULT '', callingstationid TEXT NOT NULL DEFAULT '', "
                       "expiry_time DATETIME NOT NULL DEFAULT (datetime('now', '-1 second')), "
                       "username TEXT NOT NULL DEFAULT '', pool_key TEXT NOT NULL DEFAULT '')")
            db.executemany("INSERT INTO radippool (pool_name, framedipaddress) VALUES ('main', ?)",
                           [(a,) for a in self.ippool])
        self._private(d / "mods-enabled" / "sql", f"""
            sql {{
                driver = "rlm_sql_sqlite"
                dialect = "sqlite"
                sqlite {{
                    filename = "{self.ippool_db}"
                    busy_timeout = 1000
                }}
                read_clients = no
                pool {{
                    start = 1
                    min = 1
                    max = 2
                    spare = 1
                    uses = 0
                    lifetime = 0
                    idle_timeout = 0
                }}
            }}
        """)
        # Our own queries: a lease is keyed by the NAS (NAS-IP-Address) and its port (the call
        # ID, sent in both Access- and Accounting-Requests).  Debian 12's packaged SQLite
        # allocate_find lacks an AND and fails on every allocation, so it cannot be used.
        lease = "datetime(strftime('%%s', 'now') + 3600, 'unixepoch')"
        expired = "datetime('now', '-1 second')"
        pool = "pool_name = '%{control:Pool-Name}'"
        nas = "nasipaddress = '%{NAS-IP-Address}'"
        mine = f"{nas} AND pool_key = '%{{NAS-Port}}' AND framedipaddress = '%{{Framed-IP-Address}}'"
        queries = {
            "allocate_begin": "BEGIN EXCLUSIVE",
            "allocate_commit": "COMMIT",
            "allocate_clear": "",
            "allocate_find": f"SELECT framedipaddress FROM radippool WHERE {pool} "
                             "AND expiry_time < datetime('now') ORDER BY expiry_time, id LIMIT 1",
            "pool_check": f"SELECT id FROM radippool WHERE {pool} LIMIT 1",
            "allocate_update": f"UPDATE radippool SET {nas}, pool_key = '%{{NAS-Port}}', "
                               "callingstationid = '%{Calling-Station-Id}', username = '%{User-Name}', "
                               f"expiry_time = {lease} WHERE framedipaddress = '%I'",
            "start_update": f"UPDATE radippool SET expiry_time = {lease} WHERE {mine}",
            "alive_update": f"UPDATE radippool SET expiry_time = {lease} WHERE {mine}",
            "stop_clear": f"UPDATE radippool SET expiry_time = {expired} WHERE {mine}",
            "on_clear": f"UPDATE radippool SET expiry_time = {expired} WHERE {nas}",
            "off_clear": f"UPDATE radippool SET expiry_time = {expired} WHERE {nas}",
        }
        body = "\n".join(f'    {k} = "{v}"' for k, v in queries.items())
        self._private(d / "mods-enabled" / "sqlippool", f"""
sqlippool {{
    sql_module_instance = "sql"
    dialect = "sqlite"
    pool_name = "Pool-Name"
    ippool_table = "radippool"
    lease_duration = 3600
    attribute_name = Framed-IP-Address
    pool_key = "%{{NAS-Port}}"
{body}
    messages {{
        success = "Allocated IP %{{reply:Framed-IP-Address}} to %{{User-Name}} on %{{NAS-IP-Address}}"
        failed = "IP allocation failed for %{{User-Name}} on %{{NAS-IP-Address}}"
        clear = "Released IP %{{Framed-IP-Address}}"
        exists = "Existing IP %{{reply:Framed-IP-Address}}"
        nopool = "No Pool-Name for %{{User-Name}}"
    }}
}}
""")

    def write_config(self) -> None:
        d = self.confdir
        if d.exists():
            shutil.rmtree(d)
        shutil.copytree(PACKAGED_CONFIG, d, symlinks=True)
        for sub in ("log", "radacct", "run"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        conf = (d / "radiusd.conf").read_text().splitlines()
        out = []
        for line in conf:
            key = line.strip().split("=")[0].strip()
            if key == "logdir":
                line = f"logdir = {self.workdir / 'log'}"
            elif key == "raddbdir":
                line = f"raddbdir = {d}"
            elif key == "radacctdir":
                line = f"radacctdir = {self.workdir / 'radacct'}"
            elif key == "run_dir":
                line = f"run_dir = {self.workdir / 'run'}"
            elif key in ("user", "group"):
                line = "#" + line  # stay root: the test's files are root's
            out.append(line)
        (d / "radiusd.conf").write_text("\n".join(out) + "\n")

        for link in (d / "mods-enabled").iterdir():
            link.unlink()
        for name in MODULES:
            (d / "mods-enabled" / name).symlink_to(f"../mods-available/{name}")
        self._private(d / "mods-enabled" / "mschap", """
            mschap {
                use_mppe = yes
                require_encryption = yes
                require_strong = yes
            }
        """)
        self._private(d / "mods-enabled" / "detail", """
            detail {
                filename = ${radacctdir}/detail
                permissions = 0600
                header = "%t"
            }
        """)
        ma = ("update reply {\n&Message-Authenticator := 0x00\n}"
              if self.reply_message_authenticator else "")
        pool_auth = pool_acct = ""
        if self.ippool:
            self._write_ippool(d)
            # An empty pool rejects: an Accept without an address would let the NAS pick one
            # from its own pool, and two NASes could then give out the same address.
            pool_auth = 'update control {\n&Pool-Name := "main"\n}\nsqlippool {\nnotfound = reject\n}'
            pool_acct = "sqlippool"
        for link in (d / "sites-enabled").iterdir():
            link.unlink()
        self._private(d / "sites-enabled" / "pptpkit", f"""
            server pptpkit {{
                listen {{
                    type = auth
                    ipaddr = {self.address}
                    port = {self.auth_port}
                }}
                listen {{
                    type = acct
                    ipaddr = {self.address}
                    port = {self.acct_port}
                }}
                authorize {{
                    Autz-Type Status-Server {{
                        ok
                        {ma}
                    }}
                    preprocess
                    chap
                    mschap
                    files
                    pap
                }}
                authenticate {{
                    Auth-Type PAP {{
                        pap
                    }}
                    Auth-Type CHAP {{
                        chap
                    }}
                    Auth-Type MS-CHAP {{
                        mschap
                    }}
                }}
                preacct {{
                    preprocess
                }}
                accounting {{
                    detail
                    {pool_acct}
                }}
                post-auth {{
                    {pool_auth}
                    {ma}
                    Post-Auth-Type REJECT {{
                        attr_filter.access_reject
                        {ma}
                    }}
                }}
            }}
        """)
        clients = f"""
            client pptpkit-nas {{
                ipaddr = {self.clients_network}
                secret = "{self.secret}"
                require_message_authenticator = yes
                nas_type = other
            }}
        """
        self._private(d / "clients.conf", clients)
        if self.coa_target is not None:
            host, port = self.coa_target
            with open(d / "proxy.conf", "a") as f:
                f.write(textwrap.dedent(f'''
                    home_server pptpkit-coa {{
                        type = coa
                        ipaddr = {host}
                        port = {port}
                        secret = "{self.coa_secret}"
                        coa {{
                            irt = 2
                            mrt = 16
                            mrc = 5
                            mrd = 30
                        }}
                    }}
                    home_server_pool pptpkit-coa {{
                        type = fail-over
                        home_server = pptpkit-coa
                    }}
                '''))
        lines = []
        for user in self.users:
            check = (f'NT-Password := {nt_hash(user.password)}' if user.nt_only
                     else f'Cleartext-Password := "{user.password}"')
            lines.append(f"{user.name} {check}")
            if user.reply:
                lines.append(",\n".join(f"\t{k} = {v}" for k, v in user.reply))
            lines.append("")
        self._private(d / "mods-config" / "files" / "authorize", "\n".join(lines))

    @staticmethod
    def _private(path: Path, text: str) -> None:
        if path.is_symlink() or path.exists():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(textwrap.dedent(text).lstrip("\n"))

    # -- running ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> FreeRadius:
        self.write_config()
        binary = shutil.which("freeradius", path="/usr/sbin:/usr/bin") or "freeradius"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it
        try:
            self.proc = self.lab.popen(self.namespace, [binary, "-X", "-d", str(self.confdir)],
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if "Ready to process requests" in text:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"freeradius exited {self.proc.returncode}:\n{text[-4000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"freeradius not ready after {timeout} s:\n{self.log_text()[-4000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self) -> FreeRadius:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading what it did ---------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def detail_records(self) -> list[dict[str, str]]:
        """The accounting records of the detail file, one dict per record (values unquoted;
        the header timestamp under ``"_time"``)."""
        try:
            text = self.detail_path.read_text()
        except FileNotFoundError:
            return []
        records: list[dict[str, str]] = []
        current: dict[str, str] | None = None
        for line in text.splitlines():
            if not line.strip():
                if current is not None:
                    records.append(current)
                current = None
            elif not line[0].isspace():
                current = {"_time": line.strip()}
            elif current is not None:
                key, _, value = line.strip().partition(" = ")
                current[key] = value.strip('"')
        if current is not None:
            records.append(current)
        return records

    def wait_for_records(self, n: int, timeout: float = 10.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while True:
            records = self.detail_records()
            if len(records) >= n or time.monotonic() > deadline:
                return records
            time.sleep(0.05)

    def radclient(self, namespace: str, target: str, command: str, attributes: str, secret: str,
                  *, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """``radclient -x TARGET COMMAND`` in ``namespace``, the secret from a 0600 file."""
        secret_file = self.workdir / f"radclient-secret-{hashlib.sha1(secret.encode()).hexdigest()[:8]}"
        self._private(secret_file, secret + "\n")
        binary = shutil.which("radclient", path="/usr/bin:/usr/sbin") or "radclient"
        return self.lab.run(namespace, [binary, "-x", "-r", "1", "-t", "2", "-S", str(secret_file),
                                        target, command], input=attributes, check=False,
                            timeout=timeout)
