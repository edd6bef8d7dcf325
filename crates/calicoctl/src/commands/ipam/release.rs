//! `calicoctl ipam release`: one address (`--ip`), or every leak recorded by `ipam check -o`
//! reports (`--from-report`), with the safety checks and messages of Calico's
//! `commands/ipam/release.go`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use calico_api::resource::ClusterInformation;
use calico_datastore::{DatastoreError, Key, ResourceClient};
use calico_ipam::{Ipam, ReleaseRequest};

use super::check::{HandleInfo, Report};

/// `--ip`: releases one address whoever holds it. `Err` when it was not allocated.
pub async fn ip(ipam: &Ipam, ip: IpAddr) -> Result<String> {
    let out = ipam
        .release_ips(&[ReleaseRequest {
            ip,
            handle: None,
            sequence_number: None,
        }])
        .await
        .map_err(|e| anyhow!("error: {e}"))?;
    if !out.unallocated.is_empty() {
        bail!("IP address {ip} is not assigned");
    }
    Ok(format!("Successfully released IP address {ip}\n"))
}

/// `--from-report`: releases the addresses (and deletes the handles) that every report
/// marks as leaked, guarded by each allocation's handle and sequence number so that an
/// address reassigned since the report stays.
pub async fn from_reports(
    rc: &ResourceClient,
    files: &[PathBuf],
    force: bool,
    version: &str,
) -> Result<String> {
    let info = rc
        .get::<ClusterInformation>(None, "default")
        .await
        .map_err(|e| match e {
            DatastoreError::NotFound { .. } => anyhow!(
                "resource does not exist: ClusterInformation(default): lock the datastore \
                 (calicoctl datastore migrate lock), then generate a new report with \
                 'calicoctl ipam check -o FILE'"
            ),
            e => anyhow!("{e}"),
        })?;
    let mut out = String::new();
    let mut found_current = false;
    let mut reports = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("open {}: cannot read the report", f.display()))?;
        let r: Report = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a report written by 'calicoctl ipam check -o'",
                f.display()
            )
        })?;
        if info.spec.cluster_guid != r.cluster_guid {
            // Not overridable by --force: the report is about another cluster.
            bail!(
                "cluster does not match the provided report ({}): mismatched cluster GUID. Refusing to release",
                f.display()
            );
        }
        if r.version != version {
            if !force {
                bail!(
                    "the provided report ({}) was produced using a different version ({}) of calicoctl. Refusing to release",
                    f.display(),
                    r.version
                );
            }
            out.push_str("WARNING: Report was produced using a different version of calicoctl. Ignoring due to --force option\n");
        }
        if info.metadata.resource_version == r.cluster_info_revision {
            found_current = true;
        }
        reports.push(r);
    }
    if !found_current {
        bail!(
            "the provided reports are all stale - at least one should be up-to-date. Please generate a new report while the data store is locked and try again"
        );
    }
    if info.spec.is_ready() {
        if !force {
            bail!("data store is not locked. Either lock the data store, or re-run with --force");
        }
        out.push_str("WARNING: Data store is not locked. Ignoring due to --force option\n");
    }

    let (ips, handles) = merge(&reports);
    if ips.is_empty() {
        out.push_str("Report didn't contain any leaked IPs to clean up.\n");
    } else {
        release_ips(&Ipam::new(rc.datastore().clone()), &ips, &mut out).await;
    }
    if handles.is_empty() {
        out.push_str("Report didn't contain any handles to clean up.\n");
    } else {
        delete_handles(rc, &handles, &mut out).await;
    }
    Ok(out)
}

/// What every report agrees leaked: addresses not in use in all of them (each guarded by
/// the handle and sequence number of the last report, as Calico merges), and handles leaked
/// at the same revision in all of them.
fn merge(reports: &[Report]) -> (BTreeMap<String, ReleaseRequest>, Vec<HandleInfo>) {
    let mut ips: Option<BTreeMap<String, ReleaseRequest>> = None;
    let mut handles: Option<BTreeMap<String, HandleInfo>> = None;
    for r in reports {
        let mut merged = BTreeMap::new();
        for a in r.allocations.values().flatten() {
            if a.in_use {
                continue;
            }
            if ips.as_ref().is_some_and(|m| !m.contains_key(&a.ip)) {
                continue;
            }
            let Ok(ip) = a.ip.parse::<IpAddr>() else {
                continue;
            };
            merged.insert(
                a.ip.clone(),
                ReleaseRequest {
                    ip,
                    handle: (!a.handle.is_empty()).then(|| a.handle.clone()),
                    sequence_number: a.sequence_number,
                },
            );
        }
        ips = Some(merged);
        let mut hs = BTreeMap::new();
        for h in &r.leaked_handles {
            match &handles {
                None => {
                    hs.insert(h.id.clone(), h.clone());
                }
                Some(old) if old.get(&h.id).is_some_and(|o| o.revision == h.revision) => {
                    hs.insert(h.id.clone(), h.clone());
                }
                Some(_) => {}
            }
        }
        handles = Some(hs);
    }
    (
        ips.unwrap_or_default(),
        handles.unwrap_or_default().into_values().collect(),
    )
}

async fn release_ips(ipam: &Ipam, ips: &BTreeMap<String, ReleaseRequest>, out: &mut String) {
    let _ = writeln!(out, "Releasing {} old IPs...", ips.len());
    let requests: Vec<ReleaseRequest> = ips.values().cloned().collect();
    // All at once first; if a guard refuses (the address changed hands since the report),
    // one at a time so that the others are still released.
    let (released, unallocated, errors) = match ipam.release_ips(&requests).await {
        Ok(o) => (o.released.len(), o.unallocated.len(), Vec::new()),
        Err(_) => {
            let (mut rel, mut unalloc, mut errs) = (0, 0, Vec::new());
            let mut allocated: Option<std::collections::BTreeSet<IpAddr>> = None;
            for r in &requests {
                match ipam.release_ips(std::slice::from_ref(r)).await {
                    Ok(o) => {
                        rel += o.released.len();
                        unalloc += o.unallocated.len();
                    }
                    Err(e) => {
                        // The library also refuses a guarded release of an address that is
                        // free by now; Calico counts that as already cleaned up.
                        if allocated.is_none() {
                            allocated = ipam
                                .allocations()
                                .await
                                .ok()
                                .map(|v| v.into_iter().map(|(ip, _, _)| ip).collect());
                        }
                        match &allocated {
                            Some(a) if !a.contains(&r.ip) => unalloc += 1,
                            _ => errs.push(e.to_string()),
                        }
                    }
                }
            }
            (rel, unalloc, errs)
        }
    };
    for e in &errors {
        let _ = writeln!(
            out,
            "An error occurred while releasing some IPs: {e}.  Problems are often caused by an out-of-date IPAM report.  Try regenerating the IPAM report and retry."
        );
    }
    let _ = writeln!(out, "Released {released} IPs successfully");
    if unallocated != 0 {
        let _ = writeln!(
            out,
            "{unallocated} addresses marked as leaked in the report had already been cleaned up."
        );
    }
}

async fn delete_handles(rc: &ResourceClient, handles: &[HandleInfo], out: &mut String) {
    let _ = writeln!(out, "Deleting {} handles...", handles.len());
    out.push_str("Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.\n");
    let (mut ok, mut skipped, mut errors) = (0, 0, 0);
    let mut failures = String::new();
    for h in handles {
        let key = Key::Handle { id: h.id.clone() };
        // Only at the revision the report saw: a handle used again since is left alone.
        let result = match h.revision.parse::<i64>() {
            Ok(rev) if rev > 0 => rc.datastore().delete(&key, Some(rev)).await.map(|_| ()),
            _ => {
                skipped += 1;
                out.push('x');
                continue;
            }
        };
        match result {
            Ok(()) => {
                ok += 1;
                out.push('.');
            }
            Err(DatastoreError::NotFound { .. } | DatastoreError::Conflict { .. }) => {
                skipped += 1;
                out.push('x');
            }
            Err(e) => {
                errors += 1;
                let _ = write!(failures, "\nDeleting handle {} failed: {e}.\n", h.id);
            }
        }
    }
    out.push_str(&failures);
    out.push('\n');
    let _ = writeln!(
        out,
        "Released {ok} handles; {skipped} skipped; {errors} errors."
    );
}
