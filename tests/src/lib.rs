//! Support for the end-to-end tests in `tests/tests/`: real processes on loopback and private
//! buses, never the machine's own services.

pub mod dbus;
