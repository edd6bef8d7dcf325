pub mod ipam;
pub mod node;
pub mod validate;
pub mod version;
