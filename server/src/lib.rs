//! The Vakt control server as a library: the policy engine and the people register are pure
//! cores (no files, sockets or clocks) that the service binaries wrap with storage and the API.

pub mod people;
pub mod policy;
