//! What the benches share: the shipped config, and the synthetic Cedar tree and request of
//! `pipeline`'s `cedar_decision` group and of the `decision_count` driver. Included with
//! `#[path]` (each bench uses part of it); not a bench itself.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use chrono::Utc;
use tollgate::authz::{Principal, Request, RequestContext, Resource};
use tollgate::config::Config;
use tollgate::ids::{AccountId, GroupName, UserName};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn shipped_config() -> Config {
    let text = ok(std::fs::read_to_string(repo().join("config/tollgate.toml")));
    Config::parse(&text).unwrap_or_else(|e| panic!("{e:?}"))
}

/// A policy tree with `accounts` account folders, each with its own group grant.
pub fn policy_tree(dir: &Path, accounts: usize) {
    let src = repo().join("policies");
    ok(std::fs::copy(
        src.join("schema.cedarschema"),
        dir.join("schema.cedarschema"),
    ));
    let defaults = dir.join("default-account");
    ok(std::fs::create_dir_all(&defaults));
    for entry in ok(std::fs::read_dir(src.join("default-account"))) {
        let entry = ok(entry);
        ok(std::fs::copy(
            entry.path(),
            defaults.join(entry.file_name()),
        ));
    }
    for i in 0..accounts {
        let id = account_id(i);
        let folder = dir.join("accounts").join(&id);
        ok(std::fs::create_dir_all(&folder));
        ok(std::fs::write(
            folder.join("readers.cedar"),
            format!(
                "@id(\"readers-read-storage\")\npermit (\n  principal in Tollgate::Group::\"{id}/readers\",\n  action in [Tollgate::Action::\"storage:GetObject\", Tollgate::Action::\"storage:ListObjects\"],\n  resource\n);\n"
            ),
        ));
    }
}

pub fn account_id(i: usize) -> String {
    format!("{:012}", 100_000_000_000u64 + i as u64)
}

/// `reader` (in group `readers`) of `account` asking for `storage:GetObject`.
pub fn decision_request(account: &str) -> Request {
    Request {
        principal: Principal {
            account: ok(AccountId::parse(account)),
            account_name: "bench".to_owned(),
            user: ok(UserName::parse("reader")),
            groups: vec![ok(GroupName::parse("readers"))],
            is_owner: false,
        },
        organization: None,
        action: "storage:GetObject".to_owned(),
        resource: Resource::Service {
            name: "storage".to_owned(),
        },
        context: RequestContext {
            mfa: false,
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            time: Utc::now().timestamp(),
            method: "GET".to_owned(),
            path: "/objects/a".to_owned(),
            month_to_date_spend: rust_decimal::Decimal::ZERO,
        },
    }
}
