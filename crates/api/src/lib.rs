//! Calico's `projectcalico.org/v3` resource model, as plain data.
//!
//! This crate holds every kind calico-rs reads and writes (with Calico's field names, defaults
//! and validation rules), the selector language, the Kubernetes NetworkPolicy conversion and
//! the names Calico derives (interfaces, endpoint names, etcd keys). It must never do I/O:
//! no sockets, files, clocks or async — so every rule here is testable byte for byte.
//!
//! ```
//! use calico_api::{codec, resource::Resource};
//!
//! let docs = codec::decode_documents(
//!     "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: p1}\nspec: {cidr: 10.0.0.0/16}\n",
//! ).unwrap();
//! let mut pool = docs.into_iter().next().unwrap();
//! pool.apply_defaults();
//! pool.validate().unwrap();
//! assert_eq!(pool.to_json()["spec"]["blockSize"], 26);
//! ```

pub mod codec;
pub mod kinds;
pub mod meta;
pub mod names;
pub mod numorstring;
pub mod policy_model;
pub mod resource;
pub mod scoping;
pub mod selector;
pub mod validation;

pub use kinds::*;
pub use meta::{ListMeta, ObjectMeta};
pub use resource::{API_VERSION, AnyResource, Kind, KindInfo, Resource};
pub use selector::Selector;
pub use validation::{FieldError, ValidationError};
