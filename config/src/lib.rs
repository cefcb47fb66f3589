//! Machine config types, validation, patches, PKI and `gen config` logic.
