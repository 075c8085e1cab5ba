//! Placeholder: load and capacity measurement (written next).
