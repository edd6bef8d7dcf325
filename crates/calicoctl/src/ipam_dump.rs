//! The raw IPAM records (block affinities, blocks, handles, configuration) in the JSON shape
//! of Calico's `datastore migrate export` (`migrateipam.go`): each a `Key` (its etcd path),
//! its stored `Value` and a `TTL`. Written by `datastore migrate export` and `cluster diags`,
//! read back by `datastore migrate import`.

use anyhow::{Context, Result, anyhow};
use calico_api::names::AffinityType;
use calico_datastore::{Datastore, DatastoreError, Key, KeyPrefix, KvPair};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(rename = "Key")]
    pub key: String,
    #[serde(rename = "Value")]
    pub value: Value,
    /// Go's `time.Duration` (nanoseconds); always 0 for IPAM records.
    #[serde(rename = "TTL", default)]
    pub ttl: i64,
}

/// Everything IPAM stores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamDump {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_affinities: Vec<Record>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Record>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handles: Vec<Record>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Record>,
}

fn record(kv: &KvPair) -> Result<Record> {
    let value = match serde_json::from_slice::<Value>(&kv.value) {
        Ok(v) => v,
        // Very old installs stored affinities with no value at all.
        Err(_) if kv.value.iter().all(u8::is_ascii_whitespace) => {
            serde_json::json!({"state": "", "deleted": false})
        }
        Err(e) => return Err(anyhow!("{} holds a value that is not JSON: {e}", kv.key)),
    };
    Ok(Record {
        key: kv.key.path(),
        value,
        ttl: 0,
    })
}

impl IpamDump {
    /// Reads every IPAM record.
    pub async fn read(ds: &dyn Datastore) -> Result<IpamDump> {
        let mut dump = IpamDump::default();
        for affinity_type in [AffinityType::Host, AffinityType::Virtual] {
            let list = ds
                .list(&KeyPrefix::Affinities {
                    affinity_type,
                    owner: None,
                    ip_version: None,
                })
                .await?;
            for kv in &list.items {
                dump.block_affinities.push(record(kv)?);
            }
        }
        for kv in &ds
            .list(&KeyPrefix::Blocks { ip_version: None })
            .await?
            .items
        {
            dump.blocks.push(record(kv)?);
        }
        for kv in &ds.list(&KeyPrefix::Handles).await?.items {
            dump.handles.push(record(kv)?);
        }
        match ds.get(&Key::IpamConfig).await {
            Ok(kv) => dump.config = Some(record(&kv)?),
            Err(DatastoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(dump)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.block_affinities.len()
            + self.blocks.len()
            + self.handles.len()
            + usize::from(self.config.is_some())
    }

    /// Creates every record (none may exist yet). Returns how many were handled and the
    /// errors, as Calico's `PushToDatastore` counts them.
    pub async fn write(&self, ds: &dyn Datastore) -> (usize, Vec<String>) {
        let mut handled = 0;
        let mut errs = Vec::new();
        let groups = [
            ("block affinity", &self.block_affinities[..]),
            ("IPAM block", &self.blocks[..]),
            ("IPAM handle", &self.handles[..]),
            ("IPAM config", self.config.as_slice()),
        ];
        for (what, records) in groups {
            for r in records {
                handled += 1;
                if let Err(e) = create(ds, r).await {
                    errs.push(format!("error trying to create {what} {}: {e:#}", r.key));
                }
            }
        }
        (handled, errs)
    }
}

async fn create(ds: &dyn Datastore, r: &Record) -> Result<()> {
    let key = Key::parse(&r.key).with_context(|| {
        "not a key under /calico/ipam/v2/ that calico-rs stores (was the file edited?)".to_string()
    })?;
    ds.create(&key, serde_json::to_vec(&r.value)?).await?;
    Ok(())
}
