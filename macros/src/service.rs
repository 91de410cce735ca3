//! `#[event_service(company = "…", namespace = "…", name = "…", partitions = N)]`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, Meta, Token};

use crate::errors::Errors;
use crate::segment;

const USAGE: &str =
    r#"write `#[event_service(company = "acme", namespace = "shop", name = "orders")]`"#;

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let item: syn::ItemStruct = match syn::parse2(item.clone()) {
        Ok(s) => s,
        Err(_) => {
            let e = syn::Error::new(
                Span::call_site(),
                "#[event_service] goes on a struct: `pub struct Orders { … }`",
            );
            let err = e.to_compile_error();
            return quote!(#item #err);
        }
    };
    if !item.generics.params.is_empty() {
        errors.at(
            &item.generics,
            "an event service cannot be generic; remove the type parameters",
        );
    }
    let mut company = None;
    let mut namespace = None;
    let mut name = None;
    let mut partitions: Option<i32> = None;
    let mut sagas: Option<Vec<syn::Type>> = None;
    let mut codec: Option<proc_macro2::TokenStream> = None;
    let mut results: Option<bool> = None;
    // (topic kind, key, value), each with the span of its tuple.
    let mut topic_config: Option<Vec<(String, String, String, Span)>> = None;
    match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(attr) {
        Err(e) => errors.push(syn::Error::new(e.span(), format!("{e}; {USAGE}"))),
        Ok(args) => {
            for arg in args {
                let Meta::NameValue(nv) = &arg else {
                    errors.at(&arg, format!("expected `key = value`; {USAGE}"));
                    continue;
                };
                let key = nv
                    .path
                    .get_ident()
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                let slot = match key.as_str() {
                    "results" => {
                        match &nv.value {
                            Expr::Lit(ExprLit {
                                lit: Lit::Bool(b), ..
                            }) if results.is_none() => results = Some(b.value),
                            Expr::Lit(ExprLit {
                                lit: Lit::Bool(_), ..
                            }) => errors.at(&nv.path, "`results` is given twice; keep one"),
                            other => errors.at(
                                other,
                                "`results` takes `true` when the service publishes pipeline results (`#[event(result, …)]`) on its `results` topic",
                            ),
                        }
                        continue;
                    }
                    "sagas" => {
                        match &nv.value {
                            Expr::Array(a) if sagas.is_none() => {
                                let mut types = Vec::new();
                                for e in &a.elems {
                                    match syn::parse2::<syn::Type>(e.to_token_stream()) {
                                        Ok(t) => types.push(t),
                                        Err(_) => errors.at(
                                            e,
                                            "expected a saga type, e.g. `sagas = [Checkout]`",
                                        ),
                                    }
                                }
                                sagas = Some(types);
                            }
                            Expr::Array(_) => {
                                errors.at(&nv.path, "`sagas` is given twice; keep one")
                            }
                            other => errors.at(
                                other,
                                "`sagas` takes a list of saga types: `sagas = [Checkout]`",
                            ),
                        }
                        continue;
                    }
                    "topic_config" => {
                        match &nv.value {
                            Expr::Array(a) if topic_config.is_none() => {
                                topic_config = Some(
                                    a.elems
                                        .iter()
                                        .filter_map(|e| config_entry(e, &mut errors))
                                        .collect(),
                                );
                            }
                            Expr::Array(_) => {
                                errors.at(&nv.path, "`topic_config` is given twice; keep one")
                            }
                            other => errors.at(other, CONFIG_USAGE),
                        }
                        continue;
                    }
                    "codec" => {
                        match &nv.value {
                            Expr::Lit(ExprLit { lit: Lit::Str(c), .. }) if codec.is_none() => {
                                match c.value().as_str() {
                                    "json" => codec = Some(quote!(::atoll::codec::CodecKind::Json)),
                                    "avro" => codec = Some(quote!(::atoll::codec::CodecKind::Avro)),
                                    other => errors.at(c, format!("unknown codec `{other}`; write `codec = \"json\"` or `codec = \"avro\"`")),
                                }
                            }
                            Expr::Lit(_) if codec.is_some() => errors.at(&nv.path, "`codec` is given twice; keep one"),
                            other => errors.at(other, "`codec` takes a string: `codec = \"avro\"`"),
                        }
                        continue;
                    }
                    "company" => &mut company,
                    "namespace" => &mut namespace,
                    "name" => &mut name,
                    "partitions" => {
                        match &nv.value {
                            Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => match i.base10_parse::<i32>() {
                                Ok(n) if n > 0 && partitions.is_none() => partitions = Some(n),
                                Ok(n) if n > 0 => errors.at(&nv.path, "`partitions` is given twice; keep one"),
                                _ => errors.at(i, "`partitions` must be a positive integer, e.g. `partitions = 6`"),
                            },
                            other => errors.at(other, "`partitions` must be a positive integer, e.g. `partitions = 6`"),
                        }
                        continue;
                    }
                    _ => {
                        errors.at(
                            &nv.path,
                            format!(
                                "unknown key `{}`; the keys are `company`, `namespace`, `name`, `partitions`, `codec`, `sagas`, `results` and `topic_config`",
                                nv.path.to_token_stream().to_string().replace(' ', "")
                            ),
                        );
                        continue;
                    }
                };
                let Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) = &nv.value
                else {
                    errors.at(
                        &nv.value,
                        format!("`{key}` takes a string: `{key} = \"…\"`"),
                    );
                    continue;
                };
                if slot.is_some() {
                    errors.at(&nv.path, format!("`{key}` is given twice; keep one"));
                    continue;
                }
                let what = match key.as_str() {
                    "company" => "company",
                    "namespace" => "namespace",
                    _ => "service name",
                };
                if let Err(msg) = segment::check(what, &s.value()) {
                    errors.at(s, msg);
                }
                *slot = Some(s.value());
            }
        }
    }
    for (key, value) in [
        ("company", &company),
        ("namespace", &namespace),
        ("name", &name),
    ] {
        if value.is_none() {
            errors.span(
                Span::call_site(),
                format!("missing `{key} = \"…\"`; {USAGE}"),
            );
        }
    }
    let full_len = [&company, &namespace, &name]
        .iter()
        .map(|v| v.as_ref().map_or(0, String::len) + 1)
        .sum::<usize>()
        - 1
        + atoll_naming::PrivateTopic::longest_suffix();
    if full_len > atoll_naming::MAX_TOPIC_LEN {
        errors.span(Span::call_site(), format!("the service's topic names would be up to {full_len} characters long; Kafka allows {}: shorten company, namespace or name", atoll_naming::MAX_TOPIC_LEN));
    }
    let topic_config = topic_config.unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    for (topic, key, _, span) in &topic_config {
        let owned = match topic.as_str() {
            "events" | "commands" | "private.dlq" | "private.retry" | "private.reply"
            | "private.status" | "private.control" => true,
            "results" => results == Some(true),
            "private.saga" => sagas.as_ref().is_some_and(|s| !s.is_empty()),
            _ => false,
        };
        if !owned {
            errors.span(*span, format!("the service has no `{topic}` topic; it owns `events`, `commands`, `private.dlq`, `private.retry`, `private.reply`, `private.status`, `private.control`, `results` with `results = true` and `private.saga` with `sagas = […]`"));
        } else if topic.as_str() == "private.saga" && key == "cleanup.policy" {
            errors.span(
                *span,
                "the saga state topic stays compacted: its `cleanup.policy` is atoll's",
            );
        } else if topic.as_str() == "private.status" && key == "cleanup.policy" {
            errors.span(
                *span,
                "the status topic stays compacted: its `cleanup.policy` is atoll's",
            );
        } else if topic.as_str() == "private.control" && key == "cleanup.policy" {
            errors.span(
                *span,
                "the control topic stays compacted (a hold lasts until it is lifted): its `cleanup.policy` is atoll's",
            );
        } else if !seen.insert((topic.clone(), key.clone())) {
            errors.span(
                *span,
                format!("`{key}` of `{topic}` is given twice; keep one"),
            );
        }
    }
    if !errors.is_empty() {
        let errors = errors.into_tokens();
        return quote!(#item #errors);
    }
    let ident = &item.ident;
    let (company, namespace, name) = (company.unwrap(), namespace.unwrap(), name.unwrap());
    let partitions = partitions.unwrap_or(6);
    let sagas = sagas.unwrap_or_default();
    let runs_sagas = !sagas.is_empty();
    let publishes_results = results.unwrap_or(false);
    let listeners = sagas.iter().map(|t| {
        quote::quote_spanned! {syn::spanned::Spanned::span(t)=>
            ::atoll::__private::saga_listener::<Self, #t>()
        }
    });
    let saga_impls = sagas.iter().map(|t| {
        quote::quote_spanned! {syn::spanned::Spanned::span(t)=>
            impl ::atoll::__private::DeclaredSaga for #t {
                type Service = #ident;
            }
            impl ::atoll::__private::SagaOf<#ident> for #t {}
        }
    });
    let codec_const = codec.map(|c| quote!(const CODEC: ::atoll::codec::CodecKind = #c;));
    let config_entries = topic_config
        .iter()
        .map(|(topic, key, value, _)| quote!((#topic, #key, #value)));
    let config_const = (!topic_config.is_empty()).then(|| {
        quote!(const TOPIC_CONFIG: &'static [(&'static str, &'static str, &'static str)] = &[#(#config_entries),*];)
    });
    quote! {
        #item

        impl ::atoll::Service for #ident {
            const ID: ::atoll::ServiceId =
                ::atoll::ServiceId::new_unchecked(#company, #namespace, #name);
            const PARTITIONS: i32 = #partitions;
            #codec_const
            const RUNS_SAGAS: bool = #runs_sagas;
            const PUBLISHES_RESULTS: bool = #publishes_results;
            #config_const
        }

        impl ::atoll::__private::SagaListeners for #ident {
            fn saga_listeners() -> ::std::vec::Vec<::atoll::Listener<Self>> {
                ::std::vec![#(#listeners),*]
            }
        }

        #(#saga_impls)*
    }
}

const CONFIG_USAGE: &str = r#"`topic_config` takes a list of (topic, config, value) strings, e.g. `topic_config = [("events", "retention.ms", "604800000")]`"#;

/// One `(topic, key, value)` of `topic_config`, or an error spanned on it.
fn config_entry(e: &Expr, errors: &mut Errors) -> Option<(String, String, String, Span)> {
    let span = syn::spanned::Spanned::span(e);
    let Expr::Tuple(t) = e else {
        errors.at(e, CONFIG_USAGE);
        return None;
    };
    let strings: Vec<String> = t
        .elems
        .iter()
        .filter_map(|e| match e {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Some(s.value()),
            _ => None,
        })
        .collect();
    let Some([topic, key, value]) = <[String; 3]>::try_from(strings)
        .ok()
        .filter(|_| t.elems.len() == 3)
    else {
        errors.at(e, CONFIG_USAGE);
        return None;
    };
    let config_name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.';
    if key.is_empty() || !key.chars().all(config_name) || value.is_empty() {
        errors.at(
            e,
            format!(
                "`{key}` = `{value}` is not a topic config: a name like `retention.ms` and a value"
            ),
        );
        return None;
    }
    Some((topic, key, value, span))
}
