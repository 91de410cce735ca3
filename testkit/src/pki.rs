//! Certificates made per test run: a certificate authority, a server certificate for
//! `localhost` and `127.0.0.1` that it signed, a client certificate for mutual TLS, an expired
//! server certificate, and a second authority that signed none of them (the "wrong CA").
//!
//! Made with the `openssl` crate over the system OpenSSL that the clients link anyway: no
//! second crypto library to build. Keys are EC P-256; files are PEM, written to a directory of
//! the test's.

use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::symm::Cipher;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// The private key (unencrypted, unless made with a password).
    pub key: PathBuf,
}

/// The certificates of one test run, as files in one directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    ca: (X509, PKey<Private>),
    /// The authority's certificate: what clients trust.
    pub ca_file: PathBuf,
    /// An authority that signed nothing here: trusting it, a client refuses every server.
    pub other_ca_file: PathBuf,
    /// A server certificate for `localhost` and `127.0.0.1`, valid now.
    pub server: Pair,
    /// A server certificate for the same names that expired yesterday.
    pub expired_server: Pair,
    /// A client certificate (CN `atoll-client`) for mutual TLS.
    pub client: Pair,
}

fn key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    PKey::from_ec_key(EcKey::generate(&group).expect("an EC key")).expect("a key")
}

fn serial() -> Asn1Integer {
    let mut n = BigNum::new().expect("a bignum");
    n.rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .expect("random serial");
    n.to_asn1_integer().expect("a serial")
}

/// A certificate for `cn` signed by `issuer` (self-signed without one), valid from
/// `from_days` to `to_days` days from now.
fn certificate(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<&(X509, PKey<Private>)>,
    kind: Kind,
    (from_days, to_days): (i64, i64),
) -> X509 {
    let mut name = X509NameBuilder::new().expect("a name");
    name.append_entry_by_nid(Nid::COMMONNAME, cn).expect("CN");
    let name = name.build();
    let mut b = X509::builder().expect("a certificate builder");
    b.set_version(2).expect("v3");
    b.set_serial_number(&serial()).expect("serial");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(issuer.map_or(&name, |(c, _)| c.subject_name()))
        .expect("issuer");
    b.set_pubkey(key).expect("public key");
    let day = 24 * 3600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now + from_days * day).expect("time"))
        .expect("not before");
    b.set_not_after(&Asn1Time::from_unix(now + to_days * day).expect("time"))
        .expect("not after");
    match kind {
        Kind::Authority => {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
        Kind::Server | Kind::Client => {
            b.append_extension(BasicConstraints::new().build().unwrap())
                .unwrap();
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .key_agreement()
                    .build()
                    .unwrap(),
            )
            .unwrap();
            let mut usage = ExtendedKeyUsage::new();
            match kind {
                Kind::Server => usage.server_auth(),
                _ => usage.client_auth(),
            };
            b.append_extension(usage.build().unwrap()).unwrap();
            if kind == Kind::Server {
                let ctx = b.x509v3_context(issuer.map(|(c, _)| c.as_ref()), None);
                let san = SubjectAlternativeName::new()
                    .dns("localhost")
                    .ip("127.0.0.1")
                    .build(&ctx)
                    .unwrap();
                b.append_extension(san).unwrap();
            }
        }
    }
    let signer = issuer.map_or(key, |(_, k)| k);
    b.sign(signer, MessageDigest::sha256()).expect("signed");
    b.build()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Authority,
    Server,
    Client,
}

impl Pki {
    /// Makes every certificate in `dir` (created when missing).
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("a directory for certificates");
        let ca_key = key();
        let ca = (
            certificate("atoll test CA", &ca_key, None, Kind::Authority, (-1, 30)),
            ca_key,
        );
        let other_key = key();
        let other = certificate("another CA", &other_key, None, Kind::Authority, (-1, 30));
        let mut pki = Self {
            dir: dir.to_owned(),
            ca_file: dir.join("ca.pem"),
            other_ca_file: dir.join("other-ca.pem"),
            server: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            expired_server: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            client: Pair {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            ca,
        };
        std::fs::write(&pki.ca_file, pki.ca.0.to_pem().unwrap()).unwrap();
        std::fs::write(&pki.other_ca_file, other.to_pem().unwrap()).unwrap();
        pki.server = pki.issue("server", "localhost", Kind::Server, (-1, 30), None);
        pki.expired_server = pki.issue("expired", "localhost", Kind::Server, (-30, -1), None);
        pki.client = pki.issue("client", "atoll-client", Kind::Client, (-1, 30), None);
        pki
    }

    /// A client certificate whose key is encrypted with `password` (AES-256).
    pub fn client_with_key_password(&self, password: &str) -> Pair {
        self.issue(
            "client-encrypted",
            "atoll-client",
            Kind::Client,
            (-1, 30),
            Some(password),
        )
    }

    fn issue(
        &self,
        name: &str,
        cn: &str,
        kind: Kind,
        days: (i64, i64),
        password: Option<&str>,
    ) -> Pair {
        let key = key();
        let cert = certificate(cn, &key, Some(&self.ca), kind, days);
        let pair = Pair {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&pair.cert, cert.to_pem().unwrap()).unwrap();
        let pem = match password {
            None => key.private_key_to_pem_pkcs8().unwrap(),
            Some(p) => key
                .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), p.as_bytes())
                .unwrap(),
        };
        std::fs::write(&pair.key, pem).unwrap();
        pair
    }
}
