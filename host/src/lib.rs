//! The mosvm host daemon (being built).
