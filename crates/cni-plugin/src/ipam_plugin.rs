//! The `calico-ipam` plugin: Calico's IPAM as a CNI IPAM plugin, for main plugins other than
//! `calico` (and for runtimes that call it directly). Every command goes to ipamd.

use ipnet::IpNet;
use serde_json::Value;

use crate::cni::{self, CniError, CniResult, Command, IpConfig};
use crate::ipam;
use crate::plugin::{self, Invocation};
use crate::wep::Identity;

pub async fn run(cmd: Command, inv: &Invocation) -> Result<Option<Value>, CniError> {
    // As an IPAM plugin it is always Calico's IPAM, whatever `ipam.type` names it.
    let mut inv = inv.clone();
    inv.conf.ipam.ipam_type = "calico-ipam".into();
    match cmd {
        Command::Add => add(&inv).await.map(Some),
        Command::Del => del(&inv).await.map(|()| None),
        Command::Check => check(&inv).await.map(|()| None),
        Command::Status => plugin::status(&inv).await.map(|()| None),
        Command::Gc => plugin::gc(&inv).await.map(|()| None),
        Command::Version => Ok(Some(cni::version_json(&inv.conf.cni_version))),
    }
}

fn identity(inv: &Invocation) -> Result<Identity, CniError> {
    let env = &inv.env;
    let node = inv.conf.node_name()?;
    Ok(Identity::new(
        env,
        &node,
        env.container_id()?,
        env.ifname.as_deref().unwrap_or("eth0"),
    ))
}

async fn add(inv: &Invocation) -> Result<Value, CniError> {
    let id = identity(inv)?;
    let got = plugin::addresses(inv, &id).await?;
    // The abbreviated IPAM result: the addresses with their block's prefix. Calico also lists
    // a route to each address's block; main plugins such as ptp or bridge then fail adding a
    // route the address already implies, so none is listed.
    let result = CniResult {
        interfaces: Vec::new(),
        ips: got
            .ips
            .iter()
            .map(|n| IpConfig {
                address: *n,
                gateway: None,
                interface: None,
            })
            .collect(),
        routes: Vec::new(),
        dns: inv.conf.dns.clone().unwrap_or_default(),
    };
    Ok(result.to_json(&inv.conf.cni_version))
}

async fn del(inv: &Invocation) -> Result<(), CniError> {
    let env = &inv.env;
    let container_id = env.container_id()?;
    let legacy = inv.conf.node_name().ok().map(|node| {
        Identity::new(
            env,
            &node,
            container_id,
            env.ifname.as_deref().unwrap_or("eth0"),
        )
        .legacy_handle()
    });
    let mut handles = vec![ipam::handle_id(&inv.conf.name, container_id)];
    handles.extend(legacy);
    let mut c = ipam::connect(inv.conf.ipam.endpoint()).await?;
    ipam::release(&mut c, &handles).await?;
    Ok(())
}

async fn check(inv: &Invocation) -> Result<(), CniError> {
    let container_id = inv.env.container_id()?;
    let Some(prev) = &inv.conf.prev_result else {
        return Err(CniError::config("CHECK needs prevResult"));
    };
    let prev = CniResult::parse(prev)?;
    let mut c = ipam::connect(inv.conf.ipam.endpoint()).await?;
    let held = ipam::held(&mut c, &ipam::handle_id(&inv.conf.name, container_id)).await?;
    let missing: Vec<IpNet> = prev
        .ips
        .iter()
        .map(|i| i.address)
        .filter(|a| !held.contains(&a.addr()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CniError::calico(format!(
            "CHECK: {missing:?} are not allocated to this container"
        )))
    }
}
