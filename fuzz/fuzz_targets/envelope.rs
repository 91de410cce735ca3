//! Record headers as a listener reads them: the CloudEvents envelope (borrowed, and owned as
//! `Incoming`), then the reply address's form. Input: `key\0value\0key\0value…`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rdkafka::message::{Header, OwnedHeaders};

fuzz_target!(|data: &[u8]| {
    let mut headers = OwnedHeaders::new();
    let mut parts = data.split(|b| *b == 0);
    while let (Some(key), value) = (parts.next(), parts.next()) {
        let key = String::from_utf8_lossy(key);
        headers = headers.insert(Header {
            key: &key,
            value,
        });
    }
    let incoming = atoll::envelope::Incoming::read(Some(&headers));
    let _ = format!("{incoming:?}");
    atoll::__fuzz::envelope(&headers);
});
