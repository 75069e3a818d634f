//! The ruleset Umbra installs, as typed nftables JSON (`nft -j -f -`).
//!
//! Everything lives in one table, `inet <table>`, that Umbra owns: nothing
//! here names another table, so rules Umbra does not own are never read or
//! changed. The base chain's policy is `accept`, because a drop policy in
//! our chain would override every other table's decisions; we only drop
//! what we protect. (A drop in any table is final, so other tables' drops
//! still apply to traffic we accept.)
//!
//! ```text
//! table inet umbra {
//!   set pinholes4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }
//!   set pinholes6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }
//!   set blocked4  { type ipv4_addr; flags timeout; }
//!   set blocked6  { type ipv6_addr; flags timeout; }
//!   set protected { type inet_proto . inet_service; }
//!   chain input {
//!     type filter hook input priority filter; policy accept;
//!     ip saddr @blocked4 drop
//!     ip6 saddr @blocked6 drop
//!     ct state established,related accept
//!     ip saddr . meta l4proto . th dport @pinholes4 accept
//!     ip6 saddr . meta l4proto . th dport @pinholes6 accept
//!     meta l4proto . th dport @protected drop
//!   }
//! }
//! ```
//!
//! Blocks come before `established` on purpose: remediation must cut live
//! connections too. Pinholes come after it, so a connection outlives the
//! element that let it in.

use std::borrow::Cow;
use std::collections::HashSet;

use nftables::expr::{CT, Elem, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField};
use nftables::schema::{
    Chain, Element, FlushObject, NfCmd, NfListObject, NfObject, Nftables, Rule, Set, SetFlag,
    SetType, SetTypeValue, Table,
};
use nftables::stmt::{Accept, Drop, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::Protected;

pub(crate) const PINHOLES4: &str = "pinholes4";
pub(crate) const PINHOLES6: &str = "pinholes6";
pub(crate) const BLOCKED4: &str = "blocked4";
pub(crate) const BLOCKED6: &str = "blocked6";
const PROTECTED: &str = "protected";
const CHAIN: &str = "input";

fn s(text: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(text.to_owned()))
}

fn named(e: NamedExpression<'static>) -> Expression<'static> {
    Expression::Named(e)
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn l4proto() -> Expression<'static> {
    named(NamedExpression::Meta(Meta {
        key: MetaKey::L4proto,
    }))
}

fn concat(parts: Vec<Expression<'static>>) -> Expression<'static> {
    named(NamedExpression::Concat(parts))
}

/// A pinhole element value: `addr . proto . port`.
pub(crate) fn pinhole_value(addr: String, proto: &str, port: u16) -> Expression<'static> {
    concat(vec![
        Expression::String(addr.into()),
        s(proto),
        Expression::Number(u32::from(port)),
    ])
}

/// An element with its own timeout (whole seconds, as nft's JSON takes).
pub(crate) fn with_timeout(val: Expression<'static>, secs: u32) -> Expression<'static> {
    named(NamedExpression::Elem(Elem {
        val: Box::new(val),
        timeout: Some(secs),
        expires: None,
        comment: None,
        counter: None,
    }))
}

fn cmd(c: NfCmd<'static>) -> NfObject<'static> {
    NfObject::CmdObject(c)
}

pub(crate) fn element(
    table: &str,
    set: &str,
    elem: Vec<Expression<'static>>,
) -> NfListObject<'static> {
    NfListObject::Element(Element {
        family: NfFamily::INet,
        table: table.to_owned().into(),
        name: set.to_owned().into(),
        elem: elem.into(),
    })
}

pub(crate) fn add(obj: NfListObject<'static>) -> NfObject<'static> {
    cmd(NfCmd::Add(obj))
}

pub(crate) fn delete(obj: NfListObject<'static>) -> NfObject<'static> {
    cmd(NfCmd::Delete(obj))
}

pub(crate) fn document(objects: Vec<NfObject<'static>>) -> Nftables<'static> {
    Nftables {
        objects: objects.into(),
    }
}

fn table(name: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: name.to_owned().into(),
        handle: None,
    })
}

fn set(table: &str, name: &str, types: &[SetType], timeout: bool) -> NfObject<'static> {
    add(NfListObject::Set(Box::new(Set {
        family: NfFamily::INet,
        table: table.to_owned().into(),
        name: name.to_owned().into(),
        set_type: match types {
            [one] => SetTypeValue::Single(*one),
            many => SetTypeValue::Concatenated(many.to_vec().into()),
        },
        flags: timeout.then(|| HashSet::from([SetFlag::Timeout])),
        ..Set::default()
    })))
}

fn chain(table: &str) -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: table.to_owned().into(),
        name: CHAIN.into(),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Input),
        prio: Some(0),
        policy: Some(NfChainPolicy::Accept),
        ..Chain::default()
    }
}

fn rule(
    table: &str,
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
    accept: bool,
) -> NfObject<'static> {
    let verdict = if accept {
        Statement::Accept(Some(Accept {}))
    } else {
        Statement::Drop(Some(Drop {}))
    };
    add(NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: table.to_owned().into(),
        chain: CHAIN.into(),
        expr: vec![Statement::Match(Match { left, right, op }), verdict].into(),
        handle: None,
        index: None,
        comment: None,
    }))
}

/// One transaction that creates what is missing and re-asserts the rules
/// and the protected ports, leaving the pinhole and block sets' elements
/// alone (they survive a restart). Idempotent: `add` of an existing table,
/// set or chain is a no-op, and the chain is flushed before its rules are
/// added again.
pub(crate) fn install(t: &str, protected: &[Protected]) -> Nftables<'static> {
    use SetType::{InetProto, InetService, Ipv4Addr, Ipv6Addr};
    let ct_state = named(NamedExpression::CT(CT {
        key: "state".into(),
        family: None,
        dir: None,
    }));
    let mut objects = vec![
        add(table(t)),
        set(t, PINHOLES4, &[Ipv4Addr, InetProto, InetService], true),
        set(t, PINHOLES6, &[Ipv6Addr, InetProto, InetService], true),
        set(t, BLOCKED4, &[Ipv4Addr], true),
        set(t, BLOCKED6, &[Ipv6Addr], true),
        set(t, PROTECTED, &[InetProto, InetService], false),
        add(NfListObject::Chain(chain(t))),
        cmd(NfCmd::Flush(FlushObject::Chain(chain(t)))),
        rule(
            t,
            payload("ip", "saddr"),
            Operator::EQ,
            s("@blocked4"),
            false,
        ),
        rule(
            t,
            payload("ip6", "saddr"),
            Operator::EQ,
            s("@blocked6"),
            false,
        ),
        rule(
            t,
            ct_state,
            Operator::IN,
            Expression::List(vec![s("established"), s("related")]),
            true,
        ),
        rule(
            t,
            concat(vec![
                payload("ip", "saddr"),
                l4proto(),
                payload("th", "dport"),
            ]),
            Operator::EQ,
            s("@pinholes4"),
            true,
        ),
        rule(
            t,
            concat(vec![
                payload("ip6", "saddr"),
                l4proto(),
                payload("th", "dport"),
            ]),
            Operator::EQ,
            s("@pinholes6"),
            true,
        ),
        rule(
            t,
            concat(vec![l4proto(), payload("th", "dport")]),
            Operator::EQ,
            s("@protected"),
            false,
        ),
        cmd(NfCmd::Flush(FlushObject::Set(Box::new(Set {
            family: NfFamily::INet,
            table: t.to_owned().into(),
            name: PROTECTED.into(),
            ..Set::default()
        })))),
    ];
    if !protected.is_empty() {
        let elems = protected
            .iter()
            .map(|p| {
                concat(vec![
                    s(p.proto.as_str()),
                    Expression::Number(u32::from(p.port)),
                ])
            })
            .collect();
        objects.push(add(element(t, PROTECTED, elems)));
    }
    document(objects)
}

/// Removes the table and everything in it. The `add` first makes the
/// delete succeed when the table is already gone (a second shutdown).
pub(crate) fn remove(t: &str) -> Nftables<'static> {
    document(vec![add(table(t)), delete(table(t))])
}
