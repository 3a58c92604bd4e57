//! Fake Kubernetes API server for the ARC resources the listener patches.
