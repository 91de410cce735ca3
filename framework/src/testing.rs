//! Unit-testing handlers and sagas without a broker.
