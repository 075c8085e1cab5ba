//! Placeholder: a CPU budget for the daemon (written next).
