//! Creating ACLs through the Admin API's CreateAcls, which rust-rdkafka does not wrap: a thin
//! layer over librdkafka's C functions (through `rdkafka::bindings`). The only unsafe code in
//! atoll; every pointer it takes from librdkafka is checked for null and released by a guard.
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr, CString};
use std::time::Duration;

use anyhow::{anyhow, bail};
use rdkafka::admin::AdminClient;
use rdkafka::bindings as rd;
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::acls::{Acl, Operation, Pattern, ResourceType};

/// Creates `acls` (allow, any host) and waits up to `timeout` for the broker's answer. Creating
/// an ACL that exists changes nothing. `Err` names what the broker refused and why.
pub(crate) fn create(
    admin: &AdminClient<DefaultClientContext>,
    acls: &[Acl],
    timeout: Duration,
) -> anyhow::Result<()> {
    if acls.is_empty() {
        return Ok(());
    }
    let rk = admin.inner().native_ptr();
    let mut bindings = Bindings(Vec::with_capacity(acls.len()));
    for acl in acls {
        bindings.0.push(binding(acl)?);
    }
    // SAFETY: `rk` is the live client `admin` owns; the queue is destroyed by its guard.
    let queue = Queue(unsafe { rd::rd_kafka_queue_new(rk) });
    // SAFETY: as above; the options are destroyed by their guard.
    let options = Options(unsafe {
        rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_CREATEACLS)
    });
    if queue.0.is_null() || options.0.is_null() {
        bail!("librdkafka could not set up the CreateAcls request");
    }
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut errstr = [0 as c_char; 512];
    // SAFETY: `options` is valid; `errstr` is writable for its length.
    let err = unsafe {
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options.0,
            millis,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        bail!("setting the request timeout: {}", text(errstr.as_ptr()));
    }
    // SAFETY: every binding is valid and stays owned by `bindings` (librdkafka copies them);
    // `options` and `queue` are valid.
    unsafe {
        rd::rd_kafka_CreateAcls(
            rk,
            bindings.0.as_mut_ptr(),
            bindings.0.len(),
            options.0,
            queue.0,
        );
    }
    // SAFETY: `queue` is valid; the event is destroyed by its guard.
    let event = Event(unsafe { rd::rd_kafka_queue_poll(queue.0, millis.saturating_add(5_000)) });
    if event.0.is_null() {
        bail!("no answer to CreateAcls within {timeout:?}");
    }
    // SAFETY: `event` is a valid event.
    let err = unsafe { rd::rd_kafka_event_error(event.0) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: `event` is valid; the string lives as long as it.
        let why = text(unsafe { rd::rd_kafka_event_error_string(event.0) });
        bail!("{} ({why})", RDKafkaErrorCode::from(err));
    }
    // SAFETY: `event` is valid; the result lives as long as it.
    let result = unsafe { rd::rd_kafka_event_CreateAcls_result(event.0) };
    if result.is_null() {
        bail!("CreateAcls answered with an event of another kind");
    }
    let mut n = 0usize;
    // SAFETY: `result` is valid; the array holds `n` results that live as long as `event`.
    let results = unsafe { rd::rd_kafka_CreateAcls_result_acls(result, &mut n) };
    let mut refused = Vec::new();
    for (i, acl) in acls.iter().enumerate().take(n) {
        // SAFETY: `i < n`.
        let error = unsafe { rd::rd_kafka_acl_result_error(*results.add(i)) };
        if error.is_null() {
            continue;
        }
        // SAFETY: `error` is valid for as long as `event`.
        let (code, why) = unsafe {
            (
                rd::rd_kafka_error_code(error),
                text(rd::rd_kafka_error_string(error)),
            )
        };
        if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            refused.push(format!(
                "{} {:?} on {:?} {}: {} ({why})",
                acl.principal,
                acl.operation,
                acl.resource,
                acl.name,
                RDKafkaErrorCode::from(code)
            ));
        }
    }
    if !refused.is_empty() {
        return Err(anyhow!("{}", refused.join("; ")));
    }
    Ok(())
}

/// The librdkafka binding of `acl`.
fn binding(acl: &Acl) -> anyhow::Result<*mut rd::rd_kafka_AclBinding_t> {
    use rd::rd_kafka_AclOperation_t as Op;
    use rd::rd_kafka_ResourcePatternType_t as Pat;
    use rd::rd_kafka_ResourceType_t as Res;
    let resource = match acl.resource {
        ResourceType::Topic => Res::RD_KAFKA_RESOURCE_TOPIC,
        ResourceType::Group => Res::RD_KAFKA_RESOURCE_GROUP,
        ResourceType::TransactionalId => Res::RD_KAFKA_RESOURCE_TRANSACTIONAL_ID,
        // Kafka's CLUSTER resource (4), which librdkafka calls BROKER.
        ResourceType::Cluster => Res::RD_KAFKA_RESOURCE_BROKER,
    };
    let pattern = match acl.pattern {
        Pattern::Literal => Pat::RD_KAFKA_RESOURCE_PATTERN_LITERAL,
        Pattern::Prefixed => Pat::RD_KAFKA_RESOURCE_PATTERN_PREFIXED,
    };
    let operation = match acl.operation {
        Operation::Read => Op::RD_KAFKA_ACL_OPERATION_READ,
        Operation::Write => Op::RD_KAFKA_ACL_OPERATION_WRITE,
        Operation::Describe => Op::RD_KAFKA_ACL_OPERATION_DESCRIBE,
        Operation::IdempotentWrite => Op::RD_KAFKA_ACL_OPERATION_IDEMPOTENT_WRITE,
    };
    let name = CString::new(acl.name.as_str())?;
    let principal = CString::new(acl.principal.as_str())?;
    let host = CString::new("*")?;
    let mut errstr = [0 as c_char; 512];
    // SAFETY: the strings are NUL-terminated and outlive the call (librdkafka copies them);
    // `errstr` is writable for its length.
    let b = unsafe {
        rd::rd_kafka_AclBinding_new(
            resource,
            name.as_ptr(),
            pattern,
            principal.as_ptr(),
            host.as_ptr(),
            operation,
            rd::rd_kafka_AclPermissionType_t::RD_KAFKA_ACL_PERMISSION_TYPE_ALLOW,
            errstr.as_mut_ptr(),
            errstr.len(),
        )
    };
    if b.is_null() {
        bail!("ACL {acl:?}: {}", text(errstr.as_ptr()));
    }
    Ok(b)
}

/// A C string from librdkafka, or empty.
fn text(s: *const c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka's strings are NUL-terminated.
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// ACL bindings, destroyed together.
struct Bindings(Vec<*mut rd::rd_kafka_AclBinding_t>);

impl Drop for Bindings {
    fn drop(&mut self) {
        for b in self.0.drain(..) {
            // SAFETY: each was made by `rd_kafka_AclBinding_new` and is destroyed once.
            unsafe { rd::rd_kafka_AclBinding_destroy(b) };
        }
    }
}

/// A reply queue.
struct Queue(*mut rd::rd_kafka_queue_t);

impl Drop for Queue {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: made by `rd_kafka_queue_new`, destroyed once.
            unsafe { rd::rd_kafka_queue_destroy(self.0) };
        }
    }
}

/// Admin request options.
struct Options(*mut rd::rd_kafka_AdminOptions_t);

impl Drop for Options {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: made by `rd_kafka_AdminOptions_new`, destroyed once.
            unsafe { rd::rd_kafka_AdminOptions_destroy(self.0) };
        }
    }
}

/// An event taken from a queue.
struct Event(*mut rd::rd_kafka_event_t);

impl Drop for Event {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: taken from `rd_kafka_queue_poll`, destroyed once.
            unsafe { rd::rd_kafka_event_destroy(self.0) };
        }
    }
}
