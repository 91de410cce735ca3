//! `#[derive(Events)]` on an enum: one listener's input of several event types of one topic.

use proc_macro2::TokenStream;
use quote::quote;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields};

use crate::errors::Errors;

const USAGE: &str = "write an enum with one variant per event type, each holding the event: `enum OrderFacts { Placed(OrderPlaced), Completed(OrderCompleted) }`";

pub(crate) fn expand(item: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(item) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let mut errors = Errors::default();
    let Data::Enum(data) = &input.data else {
        errors.span(
            input.ident.span(),
            format!("#[derive(Events)] goes on an enum; {USAGE}"),
        );
        return errors.into_tokens();
    };
    if !input.generics.params.is_empty() {
        errors.at(
            &input.generics,
            format!("the enum cannot be generic; {USAGE}"),
        );
    }
    if data.variants.is_empty() {
        errors.span(
            input.ident.span(),
            format!("the enum has no variant, so the listener would take nothing; {USAGE}"),
        );
    }
    let mut variants = Vec::new();
    for v in &data.variants {
        match &v.fields {
            Fields::Unnamed(f) if f.unnamed.len() == 1 => {
                variants.push((v.ident.clone(), f.unnamed[0].ty.clone()));
            }
            _ => errors.at(
                v,
                format!(
                    "each variant holds one event, e.g. `{}(OrderPlaced)`; {USAGE}",
                    v.ident
                ),
            ),
        }
    }
    if !errors.is_empty() {
        return errors.into_tokens();
    }
    let ident = &input.ident;
    let name = ident.to_string();
    let types: Vec<&syn::Type> = variants.iter().map(|(_, t)| t).collect();
    let bounds = types
        .iter()
        .map(|t| quote::quote_spanned! {t.span()=> #t: ::atoll::ListenableBy<S>});
    let (first, others) = (types[0], &types[1..]);
    let arms = variants.iter().map(|(v, t)| {
        quote! {
            if ce_type == <#t as ::atoll::Event>::ce_type() {
                return ::atoll::__private::decode_as(ctx, payload, #ident::#v).await;
            }
        }
    });
    quote! {
        impl<S: ::atoll::Service> ::atoll::Input<S> for #ident
        where
            #(#bounds,)*
        {
            fn types() -> (::atoll::InputType, ::std::vec::Vec<::atoll::InputType>) {
                (
                    ::atoll::InputType::of::<#first>(),
                    ::std::vec![#(::atoll::InputType::of::<#others>()),*],
                )
            }

            fn decode<'a>(
                ctx: &'a ::atoll::Context<S>,
                payload: &'a [u8],
            ) -> ::atoll::__private::BoxFuture<'a, ::std::result::Result<Self, ::atoll::codec::DecodeError>> {
                ::std::boxed::Box::pin(async move {
                    let ce_type = ctx.meta().ce_type.as_str();
                    #(#arms)*
                    ::std::result::Result::Err(::atoll::__private::none_of(ce_type, #name))
                })
            }
        }
    }
}
