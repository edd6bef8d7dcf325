//! NetworkSet and GlobalNetworkSet.

use serde::{Deserialize, Serialize};

use crate::resource::{GlobalNetworkSet, KindRules, NetworkSet};
use crate::validation::{Errors, Path, parse_cidr_or_ip};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkSetSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
}

pub type GlobalNetworkSetSpec = NetworkSetSpec;

/// Calico stores set members normalised: `10.0.0.1` becomes `10.0.0.1/32`, host bits kept.
fn normalise_nets(nets: &mut [String]) {
    for n in nets {
        if let Ok(net) = parse_cidr_or_ip(n) {
            *n = net.to_string();
        }
    }
}

fn check_nets(
    errs: &mut Errors,
    nets: &[String],
    labels: &std::collections::BTreeMap<String, String>,
) {
    let p = Path::root("spec").field("nets");
    for (i, n) in nets.iter().enumerate() {
        if let Err(e) = parse_cidr_or_ip(n) {
            errs.add(p.index(i), e);
        }
    }
    if labels.contains_key(crate::names::LABEL_NAMESPACE) {
        errs.add(
            Path::root("metadata")
                .field("labels")
                .key(crate::names::LABEL_NAMESPACE),
            "projectcalico.org/namespace is set by Calico and cannot be used as a label",
        );
    }
}

impl KindRules for NetworkSet {
    fn defaults(&mut self) {
        normalise_nets(&mut self.spec.nets);
    }
    fn check(&self, errs: &mut Errors) {
        check_nets(errs, &self.spec.nets, &self.metadata.labels);
    }
}

impl KindRules for GlobalNetworkSet {
    fn defaults(&mut self) {
        normalise_nets(&mut self.spec.nets);
    }
    fn check(&self, errs: &mut Errors) {
        check_nets(errs, &self.spec.nets, &self.metadata.labels);
    }
}
