#!/usr/bin/env python3
"""Cut one PV guest's life out of an rxenstored trace (`rxenstored -T FILE`)
into the replay template that `xsbench-replay` runs (pv-guest-life.txt).

    extract-pv-guest-life.py TRACE [--domid D] > pv-guest-life.txt

The trace must be rxenstored's (`IN  connN DATE TIME TYPE req R tx T (args)`):
C xenstored's trace names connections by address (reused after a free) and
omits transaction ids, so a transaction cannot be followed in it.

Which connection is which (the template keeps it, the guest's part must go
over the guest's ring):

  xl        the socket connection that sends `INTRODUCE D` (xl create)
  xlmon     a socket connection created during xl create whose first request
            is `WATCH @releaseDomain` and which outlives the domain (the
            process xl create forks to wait for the domain's death)
  xlcmd     the socket connection that writes a non-empty
            /local/domain/D/control/shutdown (xl shutdown)
  consoled  the socket connection that watches @introduceDomain (xenconsoled)
  dom0      the ring connection of domain 0 (dom0's kernel: backends, xenbus)
  guest     the ring connection of domain D (the guest's kernel and its
            user space over /dev/xen/xenbus)

Every other connection (the test scenario's own xenstore-read/-exists
probes, `xl list`, `xl domid`, a `xenstore-watch`) is left out and counted in
the header. On the guest's ring, the run of xs-client-check (the scenario's
client test, which runs in guest g1 only: everything after the guest's
`data/watch ok` up to the transaction that writes `data/client-rc`) is left
out too: it is a test, not a guest's life.

Hypervisor steps are written where the daemon saw them:
  !create             at the start (xl creates the domain before its first
                      request names it)
  !shutdown poweroff  where @releaseDomain first fired at xlmon (the guest
                      powered off)
  !destroy            where it fired again (xl destroyed the domain)
The replay waits at each for xlmon's @releaseDomain, as xl does.

Parameters: $DOMID, $UUID, $NAME, $STORE_RING_REF, $STORE_PORT,
$CONSOLE_RING_REF, $CONSOLE_PORT, put where they stand by position (the
arguments of INTRODUCE, path components after `domain`, `libxl`,
`backend/<kind>`, permissions, the values of domid/frontend-id/store/console
nodes), so a port equal to the domid is not confused with it.
"""

import argparse
import re
import sys

LINE = re.compile(r"^(IN|OUT)\s+conn(\d+) \S+ \S+ (\S+) req (\d+) tx (\d+) \((.*)\)$")
OBJ = re.compile(r"^OBJ conn(\d+) \S+ \S+ (.*)$")


class Ev:
    __slots__ = ("i", "kind", "conn", "type", "req", "tx", "payload", "what")

    def __init__(self, i, kind, conn, typ=None, req=0, tx=0, payload="", what=""):
        self.i, self.kind, self.conn, self.type = i, kind, conn, typ
        self.req, self.tx, self.payload, self.what = req, tx, payload, what


def parse(path):
    evs = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            line = line.rstrip("\n")
            m = LINE.match(line)
            if m:
                evs.append(Ev(n, m.group(1), int(m.group(2)), m.group(3), int(m.group(4)),
                              int(m.group(5)), m.group(6)))
                continue
            m = OBJ.match(line)
            if m:
                evs.append(Ev(n, "OBJ", int(m.group(1)), what=m.group(2)))
    return evs


def fields(payload):
    """A payload's NUL-terminated fields (NULs are spaces in the trace)."""
    if not payload.endswith(" "):
        raise ValueError(f"payload not NUL-terminated: {payload!r}")
    return payload[:-1].split(" ")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--domid", type=int, help="the guest (default: the first introduced)")
    a = ap.parse_args()
    evs = parse(a.trace)

    intro = [e for e in evs if e.kind == "IN" and e.type == "INTRODUCE"]
    if a.domid is not None:
        intro = [e for e in intro if fields(e.payload)[0] == str(a.domid)]
    if not intro:
        sys.exit("no INTRODUCE of that domain in the trace")
    ie = intro[0]
    D = fields(ie.payload)[0]
    store_ring_ref, store_port = fields(ie.payload)[1:3]
    xl = ie.conn

    def created(c):
        return next(e for e in evs if e.kind == "OBJ" and e.conn == c and "created" in e.what)

    start = created(xl).i
    guest = next(e.conn for e in evs if e.kind == "OBJ" and e.what == f"ring connection of domain {D}")
    dom0 = next(e.conn for e in evs if e.kind == "OBJ" and e.what == "ring connection of domain 0")
    released = next(e for e in evs if e.kind == "OBJ" and e.conn == guest and "domain released" in e.what)
    consoled = next(e.conn for e in evs if e.kind == "IN" and e.type == "WATCH"
                    and e.payload.startswith("@introduceDomain ") and e.i < start)

    first_req = {}
    ended = {}
    for e in evs:
        if e.kind == "IN":
            first_req.setdefault(e.conn, e)
        if e.kind == "OBJ" and "destroyed" in e.what:
            ended[e.conn] = e.i
    socket_conns = {e.conn: e.i for e in evs if e.kind == "OBJ" and e.what == "socket connection created"}
    xlmon = next(c for c, i in socket_conns.items()
                 if i > start and c in first_req and first_req[c].type == "WATCH"
                 and first_req[c].payload.startswith("@releaseDomain ")
                 and ended.get(c, 1 << 60) > released.i)
    xlcmd = next((e.conn for e in evs if e.kind == "IN" and e.type == "WRITE" and e.i > start
                  and e.payload.startswith(f"/local/domain/{D}/control/shutdown ")
                  and e.payload != f"/local/domain/{D}/control/shutdown "
                  and e.conn in socket_conns), None)
    # The life ends when xl's last connection goes (the process xl create
    # forked keeps xl's first connection as well as its own).
    end = max(ended.get(xlmon, evs[-1].i), ended.get(xl, 0))
    roles = {xl: "xl", xlmon: "xlmon", consoled: "consoled", dom0: "dom0", guest: "guest"}
    if xlcmd is not None:
        roles[xlcmd] = "xlcmd"

    # The guest's name and uuid, from xl's writes.
    name = uuid = None
    console_port = console_ring_ref = None
    for e in evs:
        if e.kind == "IN" and e.conn == xl and e.type == "WRITE":
            p, _, v = e.payload.partition(" ")
            if p == f"/local/domain/{D}/name":
                name = v
            elif p == f"/local/domain/{D}/vm":
                uuid = v.rsplit("/", 1)[-1]
            elif p == f"/local/domain/{D}/console/port":
                console_port = v
            elif p == f"/local/domain/{D}/console/ring-ref":
                console_ring_ref = v

    # xs-client-check's window on the guest's ring (scenario guest g1).
    skip_from = skip_to = None
    greqs = [e for e in evs if e.kind == "IN" and e.conn == guest]
    rc = next((e for e in greqs if e.type == "WRITE" and e.payload.startswith("data/client-rc ")), None)
    ok = next((e for e in greqs if e.type == "WRITE" and e.payload == "data/watch ok"), None)
    if rc is not None and ok is not None:
        end_tx = next((e for e in greqs if e.i > rc.i and e.type == "TRANSACTION_END"), rc)
        skip_from, skip_to = ok.i + 1, end_tx.i

    def sub_path(p):
        if uuid:
            p = p.replace(uuid, "$UUID")
        c = p.split("/")
        for k, x in enumerate(c):
            if x == D and k > 0 and (c[k - 1] in ("domain", "libxl") or (k > 1 and c[k - 2] == "backend")):
                c[k] = "$DOMID"
        return "/".join(c)

    def sub_value(path, v):
        leaf = path.rsplit("/", 1)[-1]
        parent = path.rsplit("/", 2)[-2] if path.count("/") >= 1 else ""
        if v == D and leaf in ("domid", "frontend-id"):
            return "$DOMID"
        if parent == "store" and leaf == "port" and v == store_port:
            return "$STORE_PORT"
        if parent == "store" and leaf == "ring-ref" and v == store_ring_ref:
            return "$STORE_RING_REF"
        if parent == "console" and leaf == "port" and v == console_port:
            return "$CONSOLE_PORT"
        if parent == "console" and leaf == "ring-ref" and v == console_ring_ref:
            return "$CONSOLE_RING_REF"
        if name is not None and v == name and leaf in ("name", "name-read"):
            return "$NAME"
        if v.startswith("/"):
            return sub_path(v)
        if uuid:
            v = v.replace(uuid, "$UUID")
        return v

    def sub_perm(x):
        if len(x) > 1 and x[0] in "nrwb" and x[1:] == D:
            return x[0] + "$DOMID"
        return x

    def render(e):
        t = e.type
        if t == "WRITE":
            p, sep, v = e.payload.partition(" ")
            if not sep:
                raise ValueError(f"WRITE without a value separator: {e.payload!r}")
            sp = sub_path(p)
            sv = sub_value(p, v)
            return f"{sp} {sv}" if sv else sp
        if t == "TRANSACTION_START":
            return ""
        f = fields(e.payload)
        if t == "INTRODUCE":
            return "$DOMID $STORE_RING_REF $STORE_PORT"
        if t in ("GET_DOMAIN_PATH", "IS_DOMAIN_INTRODUCED", "RELEASE", "RESUME"):
            return " ".join("$DOMID" if x == D else x for x in f)
        if t == "SET_PERMS":
            return " ".join([sub_path(f[0])] + [sub_perm(x) for x in f[1:]])
        if t in ("WATCH", "UNWATCH"):
            tok = f[1]
            if tok == f"dom{D}":
                tok = "dom$DOMID"
            return f"{sub_path(f[0])} {tok}"
        return " ".join(sub_path(x) for x in f)

    # Replies, by connection in order (replies keep their request's order).
    out = []
    pending = {}
    txlabel = {}  # (conn, trace tx) -> label
    ntx = {}
    skipped = {}
    hyp = 0
    lines = []
    phase_destroy_done = False
    prev_out_watch = {}
    last_req = {}

    for e in evs:
        if e.i < start or e.i > end:
            continue
        r = roles.get(e.conn)
        if e.kind == "OBJ":
            if r in ("xl", "xlmon", "xlcmd"):
                if "created" in e.what:
                    if r == "xlcmd" and not phase_destroy_done:
                        lines.append("")
                        lines.append("== destroy")
                        phase_destroy_done = True
                    lines.append(f"!open {r}")
                elif "destroyed" in e.what:
                    lines.append(f"!close {r}")
            continue
        if e.kind == "OUT":
            if e.type == "WATCH_EVENT":
                if r == "xlmon" and e.payload.startswith("@releaseDomain ") and prev_out_watch.get(e.conn) is not True:
                    hyp += 1
                    if hyp == 1:
                        lines.append("!shutdown poweroff")
                    elif hyp == 2:
                        lines.append("!destroy")
                prev_out_watch[e.conn] = False
                continue
            prev_out_watch[e.conn] = e.type == "WATCH"
            q = pending.get(e.conn)
            if q:
                k = q.pop(0)
                if k is not None:
                    exp = "OK"
                    if e.type == "ERROR":
                        exp = fields(e.payload)[0]
                    if e.type == "TRANSACTION_START":
                        tid = int(fields(e.payload)[0])
                        ntx[e.conn] = ntx.get(e.conn, 0) + 1
                        txlabel[(e.conn, tid)] = f"t{ntx[e.conn]}"
                        lines[k] = lines[k].replace(" @TX@ ", f" {txlabel[(e.conn, tid)]} ")
                    lines[k] = lines[k].replace("@EXP@", exp)
            continue
        # IN
        if r is None or (r == "guest" and skip_from is not None and skip_from <= e.i <= skip_to):
            skipped[e.conn] = skipped.get(e.conn, 0) + 1
            pending.setdefault(e.conn, []).append(None)
            continue
        if e.type == "TRANSACTION_START":
            tx = "@TX@"
        elif e.tx == 0:
            tx = "-"
        else:
            tx = txlabel.get((e.conn, e.tx), f"t?{e.tx}")
        typ = e.type
        # libxl's path clean-up (libxl__xs_path_cleanup) removes a parent
        # only if its listing just read is empty: `RM?`.
        prev = last_req.get(e.conn)
        if typ == "RM" and prev is not None and prev.type == "DIRECTORY" and prev.payload == e.payload:
            typ = "RM?"
        last_req[e.conn] = e
        lines.append(f"{r:<8} {tx} @EXP@ {typ} {render(e)}".rstrip())
        pending.setdefault(e.conn, []).append(len(lines) - 1)

    # Nodes the life reads but does not make: the host has them.
    written = set()
    host_nodes = {}
    for e in evs:
        if e.kind == "IN" and e.type in ("WRITE", "MKDIR") and start <= e.i <= end:
            written.add(e.payload.partition(" ")[0])
    last_in = {}
    for e in evs:
        if e.i > end:
            break
        if e.kind == "IN":
            last_in[e.conn] = e
        elif e.kind == "OUT" and e.type == "READ" and e.i >= start and roles.get(e.conn):
            req = last_in.get(e.conn)
            if req is not None and req.type == "READ":
                p = fields(req.payload)[0]
                if not p.startswith("/"):
                    if e.conn == guest:
                        continue
                    # dom0's relative paths, over its ring or its sockets.
                    p = "/local/domain/0/" + p
                if p not in written and f"/{D}" not in p and p not in host_nodes:
                    host_nodes[p] = e.payload
    # The host's standing watches (dom0's kernel, xenconsoled), set before.
    # (A watch removed again before the guest's life, like the scenario's
    # own tests on dom0's ring, is left out.)
    host_watches = {}
    for e in evs:
        if e.i >= start:
            break
        if e.kind == "IN" and e.type in ("WATCH", "UNWATCH") and e.conn in (dom0, consoled):
            key = (e.conn, e.payload)
            if e.type == "WATCH":
                host_watches[key] = f"{roles[e.conn]:<8} - OK WATCH {' '.join(fields(e.payload))}"
            else:
                host_watches.pop(key, None)
    host_watches = list(host_watches.values())

    w = sys.stdout.write
    w("# A PV guest's life as xenstored sees it: the requests of xl create, xl\n")
    w("# shutdown and xl's death handling, xenconsoled, dom0's kernel and the guest's\n")
    w("# kernel, in the order the daemon received them.\n")
    w(f"# Recorded by crates/xsbench/data/extract-pv-guest-life.py from {a.trace}\n")
    w(f"# (domain {D}, conns: " + ", ".join(f"{v}=conn{k}" for k, v in sorted(roles.items())) + ").\n")
    if skipped:
        w("# Left out: " + ", ".join(f"conn{k} {v} requests" + (" (xs-client-check on the guest's ring)" if k == guest else "")
                                     for k, v in sorted(skipped.items())) + ".\n")
    w("#\n# Format: ROLE TX EXPECT TYPE ARGS; TX `-` or a transaction label (per role);\n")
    w("# EXPECT the trace's outcome (OK or the error); ARGS the payload's\n")
    w("# NUL-terminated fields, space-separated (WRITE: path, then the value to the\n")
    w("# end of the line, no NUL). `RM?` is libxl's clean-up of an empty parent:\n")
    w("# only if the role's DIRECTORY of that path just listed nothing (else the\n")
    w("# walk up stops). `!` lines are hypervisor and connection steps;\n")
    w("# `== PHASE` starts a measured phase. Parameters: $DOMID $UUID $NAME\n")
    w("# $STORE_RING_REF $STORE_PORT $CONSOLE_RING_REF $CONSOLE_PORT.\n\n")
    w("== host\n")
    for p, v in sorted(host_nodes.items()):
        w(f"host     - OK WRITE {p} {v}".rstrip() + "\n")
    for l in host_watches:
        w(l + "\n")
    w("\n== create\n!create\n")
    for l in lines:
        if "@EXP@" in l or "@TX@" in l:
            raise SystemExit(f"a request without its reply: {l}")
        w(l + "\n")


if __name__ == "__main__":
    main()
