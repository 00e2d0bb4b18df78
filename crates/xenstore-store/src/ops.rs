//! The node operations: READ, DIRECTORY, DIRECTORY_PART, GET_PERMS, WRITE,
//! MKDIR, RM, SET_PERMS.
//!
//! Every operation reads through a [`View`] (the committed tree, or a
//! transaction's overlay that records what it touched) and writes through
//! an overlay, so the same code serves transactions and single requests.
//! Quota checks happen before anything is staged, so a refused request
//! leaves nothing behind.

use crate::access::{Caller, PERM_OWNER, PERM_READ, PERM_WRITE};
use crate::db::{Db, Overlay};
use crate::node::Node;
use crate::quota::Quota;
use crate::store::{nul_terminated, value_bytes, Ctx, DomainOracle, Outcome, PartCursor, Store};
use crate::watch::Match;
use xenstore_proto::{args, feature, number, path, PermList, XsError, DOMID_ANY, PAYLOAD_MAX};

/// Where reads come from.
pub(crate) enum View<'a> {
    /// The committed tree.
    Db(&'a Db),
    /// A transaction: reads are recorded for conflict detection.
    Tx(&'a Db, &'a mut Overlay),
}

impl View<'_> {
    pub(crate) fn get(&mut self, p: &str) -> Result<Option<Node>, XsError> {
        match self {
            View::Db(db) => Ok(db.get_checked(p)),
            View::Tx(db, ov) => ov.get(db, p),
        }
    }

    /// The permissions of the node at `p` as access checks see them.
    fn perms(&mut self, p: &str) -> Result<Option<PermList>, XsError> {
        match self {
            View::Db(db) => Ok(db.get(p).map(|n| db.checked_perms(n))),
            View::Tx(db, ov) => Ok(ov.get(db, p)?.map(|n| n.perms)),
        }
    }
}

/// The parent used when hiding a node's existence: special names without a
/// `/` hang off the root, as in C.
fn parent_or_root(p: &str) -> &str {
    path::parent(p).unwrap_or("/")
}

/// C's `errno_from_parents`: whether a failure on `p` may be reported as
/// `err`, or must become `EACCES` because the caller has none of the
/// `need` rights on the nearest existing ancestor.
fn hide(view: &mut View, caller: &Caller, p: &str, need: u8, err: XsError) -> XsError {
    if p == "/" {
        return err;
    }
    let mut cur = parent_or_root(p);
    loop {
        match view.perms(cur) {
            Err(e) => return e,
            Ok(Some(perms)) => {
                return if caller.perm_for(&perms) & need != 0 {
                    err
                } else {
                    XsError::Eacces
                }
            }
            Ok(None) if cur == "/" => return XsError::Eacces,
            Ok(None) => cur = parent_or_root(cur),
        }
    }
}

/// Stages the removal of `p` and its subtree, and of its name from its
/// parent's child list, firing watches as RM does: an exact event for
/// every node below `p`, a subtree event for `p`. No permission checks. The
/// walk uses a stack, never recursion; reversed pre-order removes children
/// before their parents.
pub(crate) fn stage_removal(db: &Db, ov: &mut Overlay, p: &str) -> Result<(), XsError> {
    let mut order = Vec::new();
    let mut stack = vec![p.to_owned()];
    while let Some(cur) = stack.pop() {
        if let Some(n) = ov.get(db, &cur)? {
            stack.extend(n.child_names().map(|c| path::child(&cur, c)));
            order.push(cur);
        }
    }
    for cur in order.iter().rev() {
        ov.set(db, cur, None)?;
        let how = if cur == p {
            Match::Subtree
        } else {
            Match::Exact
        };
        ov.fire(cur, how);
    }
    let parent_path = parent_or_root(p);
    if let Some(mut parent) = ov.get(db, parent_path)? {
        parent.remove_child(path::basename(p));
        ov.set(db, parent_path, Some(parent))?;
    }
    Ok(())
}

/// The node at `p` if the caller has every right in `need`; otherwise
/// `ENOENT`/`EACCES` by C's existence-hiding rule.
pub(crate) fn get_node(
    view: &mut View,
    caller: &Caller,
    p: &str,
    need: u8,
) -> Result<Node, XsError> {
    match view.get(p)? {
        Some(n) if caller.perm_for(&n.perms) & need == need => Ok(n),
        Some(_) => Err(XsError::Eacces),
        None => Err(hide(view, caller, p, need, XsError::Enoent)),
    }
}

impl Store {
    /// Runs a read-only operation on the committed tree or in a
    /// transaction.
    fn read_view<R>(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        f: impl FnOnce(&mut View) -> Result<R, XsError>,
    ) -> Result<R, XsError> {
        match tx {
            None => f(&mut View::Db(&self.db)),
            Some(_) => {
                let mut unused = Outcome::default();
                self.with_overlay(ctx, tx, &mut unused, |s, ov| f(&mut View::Tx(&s.db, ov)))
            }
        }
    }

    /// The node named by a path argument, if the caller may read it.
    fn readable_node(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        raw: &[u8],
        allow_special: bool,
    ) -> Result<Node, XsError> {
        let r = ctx.resolve(raw, allow_special)?;
        self.read_view(ctx, tx, |v| get_node(v, &ctx.caller, &r.path, PERM_READ))
    }

    pub(crate) fn op_read(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        p: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let raw = args::one_arg(p)?;
        if tx.is_none() {
            // Outside a transaction the value is copied straight from the
            // tree, by get_node's rule.
            let r = ctx.resolve(raw, false)?;
            let db = &self.db;
            return match db.get(&r.path) {
                Some(n) if ctx.caller.perm_for(&db.checked_perms(n)) & PERM_READ == PERM_READ => {
                    Ok(n.value().to_vec())
                }
                Some(_) => Err(XsError::Eacces),
                None => Err(hide(
                    &mut View::Db(db),
                    &ctx.caller,
                    &r.path,
                    PERM_READ,
                    XsError::Enoent,
                )),
            };
        }
        let n = self.readable_node(ctx, tx, raw, false)?;
        Ok(n.value.to_vec())
    }

    pub(crate) fn op_directory(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        p: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let children = self
            .readable_node(ctx, tx, args::one_arg(p)?, false)?
            .children;
        if children.wire_len() > PAYLOAD_MAX {
            return Err(XsError::E2big);
        }
        Ok(children.to_wire())
    }

    pub(crate) fn op_directory_part(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        p: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let [name, offset] = args::exactly::<2>(p)?;
        let node = self.readable_node(ctx, tx, name, false)?;
        // C reads the offset with atoi into an unsigned: negative is huge.
        let off = number::atoi(offset);
        let off = usize::try_from(off).unwrap_or(usize::MAX);
        let mut out = nul_terminated(node.generation.to_string());
        let genlen = out.len();
        let total = node.children.wire_len();
        if off >= total {
            out.push(0);
            return Ok(out);
        }
        // Whole names from the one at byte `off` of the wire form, while
        // the next still fits; the list itself is never built. The next
        // part of a listing starts where the last one stopped.
        let path = ctx.resolve(name, false)?.path;
        let (start_key, start_pos) = match &self.part_cursor {
            Some(c)
                if tx.is_none()
                    && c.offset == off
                    && c.generation == node.generation
                    && c.path == path =>
            {
                (c.key, off)
            }
            _ => (0, 0),
        };
        let maxlen = PAYLOAD_MAX - genlen - 1;
        let mut pos = start_pos;
        let mut len = 0;
        let mut end = off;
        let mut next_key = None;
        for (key, name) in node.children.keyed_from(start_key) {
            let next = pos + name.len() + 1;
            if pos >= off || next > off {
                // A name the offset points into is sent from the offset
                // on, as C does with its byte copy.
                let skip = off.saturating_sub(pos);
                let piece = name.as_bytes().get(skip..).unwrap_or_default();
                if len + piece.len() >= maxlen {
                    next_key = Some(key);
                    break;
                }
                out.extend_from_slice(piece);
                out.push(0);
                len += piece.len() + 1;
                end = next;
            }
            pos = next;
        }
        self.part_cursor = match next_key {
            Some(key) if tx.is_none() => Some(PartCursor {
                path,
                generation: node.generation,
                offset: end,
                key,
            }),
            _ => None,
        };
        if end >= total {
            out.push(0);
        }
        Ok(out)
    }

    pub(crate) fn op_get_perms(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        p: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let n = self.readable_node(ctx, tx, args::one_arg(p)?, true)?;
        Ok(n.perms.to_wire())
    }

    pub(crate) fn op_write(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        p: &[u8],
        out: &mut Outcome,
    ) -> Result<Vec<u8>, XsError> {
        let (name, value) = args::write_args(p)?;
        let r = ctx.resolve(name, false)?;
        let value = value_bytes(value);
        self.with_overlay(ctx, tx, out, |s, ov| {
            s.write_node(ctx, ov, &r.path, Some(value))
        })?;
        Ok(b"OK\0".to_vec())
    }

    pub(crate) fn op_mkdir(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        p: &[u8],
        out: &mut Outcome,
    ) -> Result<Vec<u8>, XsError> {
        let r = ctx.resolve(args::one_arg(p)?, false)?;
        self.with_overlay(ctx, tx, out, |s, ov| s.write_node(ctx, ov, &r.path, None))?;
        Ok(b"OK\0".to_vec())
    }

    /// The memory and size checks for staging `records` (the path and new
    /// contents of nodes, with the memory charge they had before, 0 for a
    /// new node) on behalf of an unprivileged caller. A node's memory
    /// charge is its record plus its path ([`Node::mem_charge`]); the
    /// node-size quota looks at the record alone.
    fn check_records(
        &self,
        ctx: &Ctx,
        ov: &Overlay,
        records: &[(&str, &Node, usize)],
        new_nodes: usize,
    ) -> Result<(), XsError> {
        let Some(q) = &ctx.quota else {
            return Ok(());
        };
        for (_, n, _) in records {
            if q.exceeds(Quota::NodeSize, n.acc_size() as u64) {
                return Err(XsError::Enospc);
            }
        }
        let me = ctx.caller.domid;
        let usage = self.domains.get(&me).map(|d| d.usage).unwrap_or_default();
        let staged = ov.delta(me);
        if new_nodes > 0 {
            let nodes = usage
                .get(Quota::Nodes)
                .saturating_add_signed(staged.nodes)
                .saturating_add(new_nodes as u64);
            if q.exceeds(Quota::Nodes, nodes) {
                return Err(XsError::Enospc);
            }
        }
        if ov.in_tx {
            // A transaction's staged records are charged to the caller
            // while it is open, whoever owns them (the store set the
            // overlay's budget from the quota).
            if ov.over_budget(ov.growth_if_staged(records.iter().map(|(p, n, _)| (*p, *n)))) {
                return Err(XsError::Eio);
            }
            return Ok(());
        }
        let added: i64 = records
            .iter()
            .filter(|(_, n, _)| n.perms.owner() == me)
            .map(|(p, n, before)| n.mem_charge(p) as i64 - *before as i64)
            .sum();
        let memory = usage
            .get(Quota::Memory)
            .saturating_add_signed(staged.memory)
            .saturating_add_signed(added);
        if added > 0 && q.exceeds(Quota::Memory, memory) {
            return Err(XsError::Eio);
        }
        Ok(())
    }

    /// WRITE (`value` is `Some`) or MKDIR (`None`) of `p`.
    fn write_node(
        &self,
        ctx: &Ctx,
        ov: &mut Overlay,
        p: &str,
        value: Option<crate::node::Value>,
    ) -> Result<(), XsError> {
        let db = &self.db;
        let existing = ov.get(db, p)?;
        if let Some(n) = existing {
            if ctx.caller.perm_for(&n.perms) & PERM_WRITE == 0 {
                return Err(XsError::Eacces);
            }
            let Some(value) = value else {
                return Ok(()); // MKDIR of an existing node: nothing happens.
            };
            let before = n.mem_charge(p);
            let mut new = n;
            new.value = value;
            self.check_records(ctx, ov, &[(p, &new, before)], 0)?;
            ov.set(db, p, Some(new))?;
            ov.fire(p, Match::Subtree);
            return Ok(());
        }
        let err = hide(
            &mut View::Tx(db, ov),
            &ctx.caller,
            p,
            PERM_WRITE,
            XsError::Enoent,
        );
        if err != XsError::Enoent {
            return Err(err);
        }
        // Collect the missing chain up to the nearest existing ancestor.
        let mut missing = vec![p];
        let mut cur = p;
        let (top_path, top) = loop {
            let par = path::parent(cur).ok_or(XsError::Einval)?;
            match ov.get(db, par)? {
                Some(n) => break (par, n),
                None => {
                    missing.push(par);
                    cur = par;
                }
            }
        };
        // Build the new records top-down: each copies its parent's
        // permissions; an unprivileged creator owns what it creates.
        let top_before = top.mem_charge(top_path);
        let mut top = top;
        let mut created: Vec<(&str, Node)> = Vec::with_capacity(missing.len());
        for (i, &np) in missing.iter().rev().enumerate() {
            let parent_perms = match created.last() {
                Some((_, n)) => n.perms.clone(),
                None => top.perms.clone(),
            };
            let mut perms = parent_perms;
            if !ctx.caller.privileged {
                perms.set_owner(ctx.caller.domid);
            }
            match created.last_mut() {
                Some((_, n)) => n.add_child(path::basename(np)),
                None => top.add_child(path::basename(np)),
            }
            let mut node = Node::new(perms);
            if i + 1 == missing.len() {
                if let Some(v) = &value {
                    node.value = v.clone();
                }
            }
            created.push((np, node));
        }
        let mut records: Vec<(&str, &Node, usize)> = vec![(top_path, &top, top_before)];
        records.extend(created.iter().map(|(np, n)| (*np, n, 0)));
        self.check_records(ctx, ov, &records, created.len())?;
        ov.set(db, top_path, Some(top))?;
        for (np, node) in created {
            ov.set(db, np, Some(node))?;
        }
        ov.created = true;
        ov.fire(p, Match::Subtree);
        Ok(())
    }

    pub(crate) fn op_rm(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        p: &[u8],
        out: &mut Outcome,
    ) -> Result<Vec<u8>, XsError> {
        let r = ctx.resolve(args::one_arg(p)?, false)?;
        self.with_overlay(ctx, tx, out, |s, ov| s.rm_node(ctx, ov, &r.path))?;
        Ok(b"OK\0".to_vec())
    }

    fn rm_node(&self, ctx: &Ctx, ov: &mut Overlay, p: &str) -> Result<(), XsError> {
        let db = &self.db;
        let mut view = View::Tx(db, ov);
        match get_node(&mut view, &ctx.caller, p, PERM_WRITE) {
            Ok(_) => {}
            Err(XsError::Enoent) => {
                // Already gone: fine if the parent exists.
                return match ov.get(db, parent_or_root(p))? {
                    Some(_) => Ok(()),
                    None => Err(XsError::Enoent),
                };
            }
            Err(e) => return Err(e),
        }
        if p == "/" {
            return Err(XsError::Einval);
        }
        if ov.get(db, parent_or_root(p))?.is_none() {
            return Err(XsError::Einval);
        }
        stage_removal(db, ov, p)
    }

    pub(crate) fn op_set_perms(
        &mut self,
        ctx: &Ctx,
        tx: Option<u32>,
        p: &[u8],
        oracle: &dyn DomainOracle,
        out: &mut Outcome,
    ) -> Result<Vec<u8>, XsError> {
        let a = args::strings(p);
        if a.len() < 2 {
            return Err(XsError::Einval);
        }
        let count = a.len() - 1;
        if let Some(q) = &ctx.quota {
            if q.exceeds(Quota::NodePermissions, count as u64) {
                return Err(XsError::Enospc);
            }
        }
        let mut perms = PermList::parse(a[1..].iter().copied())?;
        // Resolve the domids: entries naming domains that do not exist are
        // kept but ignored; DOMID_ANY needs the writer's feature.
        let writer_any = ctx.features & feature::DOMID_ANY != 0;
        for e in perms.entries_mut() {
            e.ignored = if e.domid == DOMID_ANY {
                !writer_any
            } else if self.domain_exists(e.domid, oracle) {
                self.domain_record(e.domid);
                false
            } else {
                true
            };
        }
        if perms.entries()[0].ignored {
            return Err(XsError::Enoent);
        }
        let r = ctx.resolve(a[0], true)?;
        self.with_overlay(ctx, tx, out, |s, ov| {
            let db = &s.db;
            let node = get_node(
                &mut View::Tx(db, ov),
                &ctx.caller,
                &r.path,
                PERM_WRITE | PERM_OWNER,
            )?;
            if !ctx.caller.privileged && perms.owner() != node.perms.owner() {
                return Err(XsError::Eperm);
            }
            let before = node.mem_charge(&r.path);
            let mut new = node;
            new.perms = perms;
            s.check_records(ctx, ov, &[(&r.path, &new, before)], 0)?;
            ov.set(db, &r.path, Some(new))?;
            ov.fire(&r.path, Match::Subtree);
            Ok(())
        })?;
        Ok(b"OK\0".to_vec())
    }
}
