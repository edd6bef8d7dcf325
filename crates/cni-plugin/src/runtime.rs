//! A small libcni: runs a network configuration list the way container runtimes do (ADD in
//! order with each result passed on as `prevResult`, DEL in reverse with the final result,
//! CHECK, GC and STATUS), for tests and the lab. Plugins run as processes from the plugin
//! directories, in the namespace of the calling thread.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Map, Value, json};

/// A plugin's failure, as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{plugin} {command} failed with code {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct PluginError {
    pub plugin: String,
    pub command: &'static str,
    pub code: u64,
    pub msg: String,
    pub details: String,
    pub stderr: String,
}

/// A configuration list (what sits in `/etc/cni/net.d/*.conflist`).
#[derive(Debug, Clone)]
pub struct ConfList {
    pub cni_version: String,
    pub name: String,
    pub plugins: Vec<Value>,
}

impl ConfList {
    pub fn parse(v: &Value) -> Result<ConfList, String> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(ConfList {
            cni_version: s("cniVersion").ok_or("conflist: cniVersion is missing")?,
            name: s("name").ok_or("conflist: name is missing")?,
            plugins: v
                .get("plugins")
                .and_then(Value::as_array)
                .cloned()
                .ok_or("conflist: plugins is missing")?,
        })
    }
}

/// One attachment of a container to the network.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// CNI_ARGS pairs (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `IP`...).
    pub args: Vec<(String, String)>,
    /// Capability arguments the runtime offers (`portMappings`, `bandwidth`, ...).
    pub capability_args: Map<String, Value>,
}

/// The runtime: where plugins are, what extra environment they get, where results are kept.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub plugin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

impl Runtime {
    pub fn new(plugin_dirs: Vec<PathBuf>, cache_dir: &Path) -> Runtime {
        Runtime {
            plugin_dirs,
            cache_dir: cache_dir.to_path_buf(),
            extra_env: Vec::new(),
        }
    }

    fn cache_path(&self, list: &ConfList, a: &Attachment) -> PathBuf {
        self.cache_dir
            .join(format!("{}-{}-{}", list.name, a.container_id, a.ifname))
    }

    /// The final ADD result kept for the attachment, if any.
    pub fn cached_result(&self, list: &ConfList, a: &Attachment) -> Option<Value> {
        let text = std::fs::read_to_string(self.cache_path(list, a)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn plugin_config(
        &self,
        list: &ConfList,
        plugin: &Value,
        a: Option<&Attachment>,
        prev: Option<&Value>,
    ) -> Value {
        let mut conf = plugin.as_object().cloned().unwrap_or_default();
        conf.insert("cniVersion".into(), json!(list.cni_version));
        conf.insert("name".into(), json!(list.name));
        let caps = conf.remove("capabilities");
        if let Some(a) = a {
            let mut runtime_config = Map::new();
            if let Some(Value::Object(caps)) = caps {
                for (cap, on) in caps {
                    if on == json!(true)
                        && let Some(v) = a.capability_args.get(&cap)
                    {
                        runtime_config.insert(cap, v.clone());
                    }
                }
            }
            if !runtime_config.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
            }
        }
        if let Some(p) = prev {
            conf.insert("prevResult".into(), p.clone());
        }
        Value::Object(conf)
    }

    fn exec(
        &self,
        command: &'static str,
        plugin: &Value,
        conf: &Value,
        a: Option<&Attachment>,
    ) -> Result<Option<Value>, PluginError> {
        let ty = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let err = |code: u64, msg: String, stderr: String| PluginError {
            plugin: ty.clone(),
            command,
            code,
            msg,
            details: String::new(),
            stderr,
        };
        let bin = self
            .plugin_dirs
            .iter()
            .map(|d| d.join(&ty))
            .find(|p| p.is_file())
            .ok_or_else(|| err(0, format!("plugin {ty:?} not found"), String::new()))?;
        let path = self
            .plugin_dirs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut cmd = Command::new(&bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        if let Some(a) = a {
            cmd.env("CNI_CONTAINERID", &a.container_id)
                .env("CNI_IFNAME", &a.ifname);
            if let Some(ns) = &a.netns {
                cmd.env("CNI_NETNS", ns);
            }
            let mut args = vec!["IgnoreUnknown=1".to_string()];
            args.extend(a.args.iter().map(|(k, v)| format!("{k}={v}")));
            cmd.env("CNI_ARGS", args.join(";"));
        }
        let mut child = cmd.spawn().map_err(|e| {
            err(
                0,
                format!("cannot run {}: {e}", bin.display()),
                String::new(),
            )
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| err(0, format!("waiting for {ty}: {e}"), String::new()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() {
            let v: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
            return Err(PluginError {
                plugin: ty.clone(),
                command,
                code: v.get("code").and_then(Value::as_u64).unwrap_or(0),
                msg: v
                    .get("msg")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("exit {} with output {stdout:?}", out.status)),
                details: v
                    .get("details")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                stderr,
            });
        }
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&stdout).map(Some).map_err(|e| {
            err(
                0,
                format!("{ty} printed invalid JSON: {e}: {stdout:?}"),
                stderr,
            )
        })
    }

    /// ADD through the list; the final result is cached and returned.
    pub fn add(&self, list: &ConfList, a: &Attachment) -> Result<Value, PluginError> {
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let conf = self.plugin_config(list, plugin, Some(a), prev.as_ref());
            prev = self.exec("ADD", plugin, &conf, Some(a))?;
        }
        let result = prev.unwrap_or(Value::Null);
        let _ = std::fs::create_dir_all(&self.cache_dir);
        let _ = std::fs::write(self.cache_path(list, a), result.to_string());
        Ok(result)
    }

    /// DEL through the list in reverse, each with the cached final result; the cache entry
    /// goes once every plugin succeeded.
    pub fn del(&self, list: &ConfList, a: &Attachment) -> Result<(), PluginError> {
        let prev = self.cached_result(list, a);
        for plugin in list.plugins.iter().rev() {
            let conf = self.plugin_config(list, plugin, Some(a), prev.as_ref());
            self.exec("DEL", plugin, &conf, Some(a))?;
        }
        let _ = std::fs::remove_file(self.cache_path(list, a));
        Ok(())
    }

    /// CHECK through the list with the cached final result.
    pub fn check(&self, list: &ConfList, a: &Attachment) -> Result<(), PluginError> {
        let prev = self.cached_result(list, a);
        for plugin in &list.plugins {
            let conf = self.plugin_config(list, plugin, Some(a), prev.as_ref());
            self.exec("CHECK", plugin, &conf, Some(a))?;
        }
        Ok(())
    }

    /// GC with the attachments still in use; goes on past errors and returns them all.
    pub fn gc(&self, list: &ConfList, valid: &[(String, String)]) -> Vec<PluginError> {
        let attachments: Vec<Value> = valid
            .iter()
            .map(|(c, i)| json!({"containerID": c, "ifname": i}))
            .collect();
        let mut errors = Vec::new();
        for plugin in &list.plugins {
            let mut conf = self.plugin_config(list, plugin, None, None);
            conf["cni.dev/valid-attachments"] = Value::Array(attachments.clone());
            conf["cni.dev/attachments"] = Value::Array(attachments.clone());
            if let Err(e) = self.exec("GC", plugin, &conf, None) {
                errors.push(e);
            }
        }
        errors
    }

    /// STATUS of every plugin in the list.
    pub fn status(&self, list: &ConfList) -> Result<(), PluginError> {
        for plugin in &list.plugins {
            let conf = self.plugin_config(list, plugin, None, None);
            self.exec("STATUS", plugin, &conf, None)?;
        }
        Ok(())
    }
}
