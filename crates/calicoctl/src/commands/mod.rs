pub mod cluster;
pub mod completion;
pub mod datastore;
pub mod ipam;
pub mod node;
pub mod validate;
pub mod version;
