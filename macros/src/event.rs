//! `#[derive(Event)]` with `#[event(fact | command, name = "…", version = N, service = Path)]`
//! and `#[event(key)]` on the aggregate id field.

use proc_macro2::{Span, TokenStream};
use quote::{quote, ToTokens};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, ExprLit, Fields, Lit, Member, Meta, Token};

use crate::errors::Errors;

const USAGE: &str = r#"write `#[event(fact, name = "order_placed", version = 1, service = Orders)]` (or `command`, `reply`, `result`)"#;

enum Kind {
    Fact,
    Command,
    Reply,
    Result,
}

pub(crate) fn expand(item: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(item) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Errors::default();
    if !input.generics.params.is_empty() {
        errors.at(
            &input.generics,
            "an event cannot be generic; events are contracts with one concrete shape",
        );
    }
    let mut kind: Option<(Kind, Span)> = None;
    let mut name: Option<String> = None;
    let mut version: Option<u32> = None;
    let mut service: Option<syn::Path> = None;
    let mut reply: Option<syn::Type> = None;
    let mut seen_attr: Option<&syn::Attribute> = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("event")) {
        seen_attr.get_or_insert(attr);
        let args = match attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
            Ok(a) => a,
            Err(e) => {
                errors.push(syn::Error::new(e.span(), format!("{e}; {USAGE}")));
                continue;
            }
        };
        for arg in args {
            match &arg {
                Meta::Path(p) if p.is_ident("fact") || p.is_ident("command") || p.is_ident("reply") || p.is_ident("result") => {
                    let k = if p.is_ident("fact") {
                        Kind::Fact
                    } else if p.is_ident("command") {
                        Kind::Command
                    } else if p.is_ident("result") {
                        Kind::Result
                    } else {
                        Kind::Reply
                    };
                    if kind.is_some() {
                        errors.at(p, "an event is one of `fact`, `command`, `reply` or `result`; keep one");
                    } else {
                        kind = Some((k, p.span()));
                    }
                }
                Meta::NameValue(nv) if nv.path.is_ident("name") => match &nv.value {
                    Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => {
                        let v = s.value();
                        let ok = !v.is_empty()
                            && v.starts_with(|c: char| c.is_ascii_lowercase())
                            && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                        if !ok {
                            errors.at(s, format!("event name `{v}` must be snake_case (`[a-z][a-z0-9_]*`), e.g. `order_placed` for a fact or `place_order` for a command"));
                        }
                        name = Some(v);
                    }
                    other => errors.at(other, r#"`name` takes a string: `name = "order_placed"`"#),
                },
                Meta::NameValue(nv) if nv.path.is_ident("version") => match &nv.value {
                    Expr::Lit(ExprLit { lit: Lit::Int(i), .. }) => match i.base10_parse::<u32>() {
                        Ok(v) if v >= 1 => version = Some(v),
                        _ => errors.at(i, "`version` starts at 1: `version = 1`"),
                    },
                    other => errors.at(other, "`version` takes an integer from 1: `version = 1`"),
                },
                Meta::NameValue(nv) if nv.path.is_ident("service") => match &nv.value {
                    Expr::Path(p) => service = Some(p.path.clone()),
                    other => errors.at(other, "`service` takes the service's type: `service = Orders`"),
                },
                Meta::NameValue(nv) if nv.path.is_ident("reply") => {
                    match syn::parse2::<syn::Type>(nv.value.to_token_stream()) {
                        Ok(t) if reply.is_none() => reply = Some(t),
                        Ok(_) => errors.at(&nv.path, "`reply` is given twice; keep one"),
                        Err(_) => errors.at(&nv.value, "`reply` takes the reply's type: `reply = StockReserved`"),
                    }
                }
                Meta::Path(p) if p.is_ident("key") => {
                    errors.at(p, "`key` goes on the field that holds the aggregate id: `#[event(key)] order_id: String`")
                }
                other => errors.at(
                    other,
                    format!(
                        "unknown `{}`; the event attribute takes `fact`, `command`, `reply` or `result`, `name`, `version`, `service` and, on a command, `reply = Type`",
                        other.path().to_token_stream().to_string().replace(' ', "")
                    ),
                ),
            }
        }
    }
    if let Some(at) = seen_attr {
        if kind.is_none() {
            errors.at(at, "say whether the event is a `fact` (something that happened), a `command` (a request), a `reply` (a command's answer) or a `result` (a pipeline's output): `#[event(fact, …)]`");
        }
        if name.is_none() {
            errors.at(at, r#"missing `name = "…"`: the event's snake_case name, e.g. `name = "order_placed"`"#);
        }
        if version.is_none() {
            errors.at(at, "missing `version = N`: the contract version, from 1");
        }
        if service.is_none() {
            errors.at(at, "missing `service = Type`: the service that owns the event, e.g. `service = Orders`");
        }
    } else {
        errors.span(
            Span::call_site(),
            format!("#[derive(Event)] needs an `#[event(…)]` attribute; {USAGE}"),
        );
    }
    if let (Some(t), Some((Kind::Fact | Kind::Reply | Kind::Result, _))) = (&reply, &kind) {
        errors.at(
            t,
            "`reply = …` names the reply type of a command; only a `command` has one",
        );
    }
    let key = key_field(&input, &mut errors);
    if !errors.is_empty() {
        return errors.into_tokens();
    }
    let ident = &input.ident;
    let (kind, kind_span) = kind.unwrap();
    let (name, version, service) = (name.unwrap(), version.unwrap(), service.unwrap());
    let key_fn = key.map(|member| {
        quote! {
            fn key(&self) -> ::std::option::Option<::std::string::String> {
                ::std::option::Option::Some(::std::string::ToString::to_string(&self.#member))
            }
        }
    });
    let request_impl = reply.map(|t| {
        quote::quote_spanned! {t.span()=>
            impl ::atoll::Request for #ident {
                type Reply = #t;
            }
        }
    });
    // A fact or result its own service's handlers may return (emitted); a reply any handler
    // may return (sent to the command's reply topic).
    let emitted = quote::quote_spanned! {kind_span=>
        impl ::atoll::Output<#service> for #ident {
            fn send(
                self,
                ctx: &::atoll::Context<#service>,
            ) -> impl ::std::future::Future<Output = ::atoll::Result<()>> + ::std::marker::Send {
                ::atoll::__private::emit_output(self, ctx)
            }
        }
    };
    let kind_impls = match kind {
        Kind::Fact => quote::quote_spanned! {kind_span=>
            impl ::atoll::FactOf<#service> for #ident {}
            impl<S: ::atoll::Service> ::atoll::ListenableBy<S> for #ident {}
            #emitted
        },
        Kind::Command => quote::quote_spanned! {kind_span=>
            impl ::atoll::Command for #ident {}
            impl ::atoll::ListenableBy<#service> for #ident {}
        },
        // Any service may request the command and so receive its reply, on its own reply topic.
        Kind::Reply => quote::quote_spanned! {kind_span=>
            impl ::atoll::Reply for #ident {}
            impl<S: ::atoll::Service> ::atoll::ListenableBy<S> for #ident {}
            impl<S: ::atoll::Service> ::atoll::Output<S> for #ident {
                fn send(
                    self,
                    ctx: &::atoll::Context<S>,
                ) -> impl ::std::future::Future<Output = ::atoll::Result<()>> + ::std::marker::Send {
                    ::atoll::__private::reply_output(self, ctx)
                }
            }
        },
        // Published by its owner alone, like a fact, on the owner's `results` topic, which the
        // owner must declare.
        Kind::Result => quote::quote_spanned! {kind_span=>
            impl ::atoll::FactOf<#service> for #ident {}
            impl<S: ::atoll::Service> ::atoll::ListenableBy<S> for #ident {}
            #emitted
            const _: () = ::std::assert!(
                <#service as ::atoll::Service>::PUBLISHES_RESULTS,
                "a `result` event's service publishes results: declare `#[event_service(…, results = true)]` on it"
            );
        },
    };
    let kind_value = match kind {
        Kind::Fact => quote!(::atoll::EventKind::Fact),
        Kind::Command => quote!(::atoll::EventKind::Command),
        Kind::Reply => quote!(::atoll::EventKind::Reply),
        Kind::Result => quote!(::atoll::EventKind::Result),
    };
    quote! {
        impl ::atoll::Event for #ident {
            type Service = #service;
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            const KIND: ::atoll::EventKind = #kind_value;
            #key_fn
            fn ce_type() -> &'static str {
                static CE_TYPE: ::atoll::__private::OnceLock<::std::string::String> =
                    ::atoll::__private::OnceLock::new();
                CE_TYPE.get_or_init(::atoll::__private::ce_type_of::<Self>)
            }
            fn avro_schema() -> ::std::option::Option<::atoll::__private::AvroSchemaValue> {
                #[allow(unused_imports)]
                use ::atoll::__private::{AvroProbeDerived as _, AvroProbeNone as _};
                (&::atoll::__private::AvroProbe::<Self>::new()).avro_schema()
            }
        }
        #kind_impls
        #request_impl
    }
}

/// The field marked `#[event(key)]`, if any.
fn key_field(input: &DeriveInput, errors: &mut Errors) -> Option<Member> {
    let Data::Struct(data) = &input.data else {
        // Enums are fine as events; they just have no key field.
        return None;
    };
    let mut found: Option<Member> = None;
    let fields: Vec<_> = match &data.fields {
        Fields::Named(f) => f.named.iter().collect(),
        Fields::Unnamed(f) => f.unnamed.iter().collect(),
        Fields::Unit => Vec::new(),
    };
    for (i, field) in fields.into_iter().enumerate() {
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("event")) {
            match attr.parse_args::<syn::Path>() {
                Ok(p) if p.is_ident("key") => {
                    if found.is_some() {
                        errors.at(attr, "only one field can be the key; the key is the aggregate id, e.g. the order id");
                    } else {
                        found = Some(match &field.ident {
                            Some(id) => Member::Named(id.clone()),
                            None => Member::Unnamed(i.into()),
                        });
                    }
                }
                _ => errors.at(
                    attr,
                    "on a field, write `#[event(key)]` to make it the record key",
                ),
            }
        }
    }
    found
}
