//! Fake GitHub REST + Actions scale-set service + message broker on one loopback port.
