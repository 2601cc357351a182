//! Signals: the normalized model, the Alertmanager and Event adapters, and the fingerprint.
