//! `#[handlers]` on an `impl` block; `#[listener(name = "…")]` on each handler method.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Expr, ExprLit, FnArg, ImplItem, ImplItemFn, ItemImpl, Lit, Meta, ReturnType, Token, Type,
};

use crate::errors::Errors;
use crate::segment;

const SENDS: &str = "`sends` lists the command types the listener sends (for the manifest and its ACLs), e.g. `sends = [ExpireReservation]`";

const SIGNATURE: &str =
    "a handler is `async fn name(&self, ctx: Context<Self>, event: SomeEvent) -> HandlerResult`";

struct Handler {
    name: String,
    settings: Vec<TokenStream>,
    /// The tables of the view the listener builds (`view = "…"`).
    view: Vec<String>,
    /// The commands it sends (`sends = [Type, …]`).
    sends: Vec<syn::Path>,
    method: syn::Ident,
    extractors: Vec<Type>,
    event: Type,
    /// What the handler returns in its `Ok`, when its return type says it plainly
    /// (`HandlerResult<T>`, `Result<T, E>`): named so that a type it cannot return is an error
    /// at the return type.
    output: Option<Type>,
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    if !attr.is_empty() {
        errors.at(&attr, "#[handlers] takes no arguments; configure each method with `#[listener(name = \"…\")]`");
    }
    let mut block: ItemImpl = match syn::parse2(item.clone()) {
        Ok(b) => b,
        Err(_) => {
            let e = syn::Error::new(Span::call_site(), "#[handlers] goes on an `impl` block of an event service: `#[handlers] impl Orders { … }`");
            let e = e.to_compile_error();
            return quote!(#item #e);
        }
    };
    if let Some((_, path, _)) = &block.trait_ {
        errors.at(
            path,
            "#[handlers] goes on an inherent `impl Service { … }` block, not a trait impl",
        );
    }
    if !block.generics.params.is_empty() {
        errors.at(
            &block.generics,
            "an event service cannot be generic; remove the type parameters",
        );
    }
    let mut handlers: Vec<Handler> = Vec::new();
    let mut names: Vec<(String, Span)> = Vec::new();
    for item in &mut block.items {
        let ImplItem::Fn(f) = item else { continue };
        let attrs: Vec<syn::Attribute> = f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("listener"))
            .cloned()
            .collect();
        f.attrs.retain(|a| !a.path().is_ident("listener"));
        if attrs.is_empty() {
            continue;
        }
        if attrs.len() > 1 {
            errors.at(
                &attrs[1],
                "a method is one listener; remove the second `#[listener]`, or add another method",
            );
        }
        let Some(ListenerAttr {
            name,
            span,
            settings,
            view,
            sends,
        }) = listener_attr(&attrs[0], &mut errors)
        else {
            continue;
        };
        if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
            let mut e = syn::Error::new(span, format!("listener name `{name}` is used twice; each listener is its own consumer group, so give each a distinct name"));
            e.combine(syn::Error::new(
                *first,
                format!("`{name}` is first used here"),
            ));
            errors.push(e);
        }
        names.push((name.clone(), span));
        if let Some(mut h) = signature(f, name, settings, &mut errors) {
            h.view = view;
            h.sends = sends;
            handlers.push(h);
        }
    }
    let self_ty = &block.self_ty;
    if !errors.is_empty() {
        // Still implement `Handlers` (with no listeners) so that the errors above are the
        // only ones the user sees.
        let fallback = (block.trait_.is_none() && block.generics.params.is_empty()).then(|| {
            quote! {
                impl ::atoll::Handlers for #self_ty {
                    fn listeners() -> ::std::vec::Vec<::atoll::Listener<Self>> {
                        ::std::vec::Vec::new()
                    }
                }
            }
        });
        let errors = errors.into_tokens();
        return quote!(#block #fallback #errors);
    }
    let listeners = handlers.iter().map(|h| {
        let Handler { name, settings, view, sends, method, extractors, event, output } = h;
        let output = match output {
            Some(t) => quote!(#t),
            None => quote!(_),
        };
        let extract = extractors.iter().map(|ty| {
            quote_spanned! {ty.span()=>
                <#ty as ::atoll::FromContext<#self_ty>>::from_context(&ctx)
            }
        });
        let new = quote_spanned! {event.span()=> ::atoll::Listener::<#self_ty>::new::<#event, _, _, #output> };
        let transactional = extractors.iter().map(|ty| {
            quote_spanned! {ty.span()=> <#ty as ::atoll::FromContext<#self_ty>>::TRANSACTION }
        });
        quote! {
            #new(#name, |svc: ::atoll::__private::Arc<#self_ty>, ctx: ::atoll::Context<#self_ty>, event: #event| {
                async move { svc.#method(#(#extract,)* event).await }
            })
            .with_settings({
                #[allow(unused_mut)]
                let mut settings = ::atoll::config::ListenerSettings::default();
                #(#settings)*
                settings
            })
            .transaction(::std::option::Option::None #(.or(#transactional))*)
            .view(&[#(#view),*])
            .sending(::std::vec![#(::atoll::__private::command_type::<#sends>()),*])
        }
    });
    quote! {
        #block

        impl ::atoll::Handlers for #self_ty {
            fn listeners() -> ::std::vec::Vec<::atoll::Listener<Self>> {
                ::std::vec![#(#listeners),*]
            }
        }
    }
}

/// What `#[listener(…)]` says.
struct ListenerAttr {
    name: String,
    span: Span,
    settings: Vec<TokenStream>,
    view: Vec<String>,
    sends: Vec<syn::Path>,
}

/// `name = "…"`, then settings as `key = value`: integers, or the modes `retry`, `ordering`
/// and `delivery` as strings, `view = "table, …"`, and `sends = [Command, …]`. The compiler checks each key against
/// `atoll::config::ListenerSettings`.
fn listener_attr(attr: &syn::Attribute, errors: &mut Errors) -> Option<ListenerAttr> {
    const USAGE: &str = r#"write `#[listener(name = "place-order")]`, optionally with settings such as `max_attempts = 5` or `retry = "non_blocking"`"#;
    let args = match attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated) {
        Ok(a) => a,
        Err(e) => {
            errors.push(syn::Error::new(e.span(), format!("{e}; {USAGE}")));
            return None;
        }
    };
    let mut name = None;
    let mut settings = Vec::new();
    let mut view = Vec::new();
    let mut sends = Vec::new();
    for arg in args {
        let Meta::NameValue(nv) = &arg else {
            errors.at(&arg, format!("expected `key = value`; {USAGE}"));
            continue;
        };
        let Some(key) = nv.path.get_ident() else {
            errors.at(&nv.path, format!("expected a setting name; {USAGE}"));
            continue;
        };
        match (key.to_string().as_str(), &nv.value) {
            (
                "name",
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }),
            ) => {
                if let Err(msg) = segment::check("listener name", &s.value()) {
                    errors.at(s, msg);
                }
                name = Some((s.value(), s.span()));
            }
            ("name", other) => errors.at(other, format!("`name` takes a string; {USAGE}")),
            (
                "view",
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }),
            ) => {
                for table in s.value().split(',').map(str::trim) {
                    match atoll_naming::check_table(table) {
                        Ok(()) => view.push(table.to_owned()),
                        Err(why) => errors.at(s, format!("{why}; `view` names the tables the listener's view writes, e.g. `view = \"order_status\"`")),
                    }
                }
            }
            ("view", other) => errors.at(
                other,
                r#"`view` takes the view's tables as a string, e.g. `view = "order_status"`"#,
            ),
            ("sends", Expr::Array(list)) => {
                for command in &list.elems {
                    match command {
                        Expr::Path(p) if p.qself.is_none() => sends.push(p.path.clone()),
                        other => errors.at(other, SENDS),
                    }
                }
            }
            ("sends", other) => errors.at(other, SENDS),
            (_, Expr::Array(list)) => {
                let mut ints = Vec::with_capacity(list.elems.len());
                for elem in &list.elems {
                    match elem {
                        Expr::Lit(ExprLit {
                            lit: Lit::Int(i), ..
                        }) => ints.push(i.clone()),
                        other => errors.at(
                            other,
                            format!(
                                "`{key}` takes a list of integers, e.g. `{key} = [1000, 10000]`"
                            ),
                        ),
                    }
                }
                settings.push(quote_spanned!(key.span()=> settings.#key = ::std::option::Option::Some(::std::vec![#(#ints),*]);));
            }
            (
                setting @ ("retry" | "ordering" | "delivery"),
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }),
            ) => {
                let (ty, choices, help): (&str, &[(&str, &str)], &str) = match setting {
                    "retry" => (
                        "RetryMode",
                        &[("strict", "Strict"), ("non_blocking", "NonBlocking")],
                        r#"`retry` is `"strict"` (the partition waits) or `"non_blocking"` (through the retry topic)"#,
                    ),
                    "ordering" => (
                        "OrderingMode",
                        &[
                            ("partition", "Partition"),
                            ("key", "Key"),
                            ("unordered", "Unordered"),
                        ],
                        r#"`ordering` is `"partition"` (one at a time), `"key"` (in order per key) or `"unordered"`"#,
                    ),
                    _ => (
                        "DeliveryMode",
                        &[
                            ("at_least_once", "AtLeastOnce"),
                            ("exactly_once", "ExactlyOnce"),
                        ],
                        r#"`delivery` is `"at_least_once"` (the default) or `"exactly_once"` (outputs and offsets in one Kafka transaction)"#,
                    ),
                };
                let Some((_, variant)) = choices.iter().find(|(v, _)| *v == s.value()) else {
                    errors.at(s, help);
                    continue;
                };
                let (ty, variant) = (format_ident!("{ty}"), format_ident!("{variant}"));
                settings.push(quote_spanned!(key.span()=> settings.#key = ::std::option::Option::Some(::atoll::config::#ty::#variant);));
            }
            (
                _,
                Expr::Lit(ExprLit {
                    lit: Lit::Int(i), ..
                }),
            ) => {
                settings.push(
                    quote_spanned!(key.span()=> settings.#key = ::std::option::Option::Some(#i);),
                );
            }
            (k, other) => errors.at(other, format!("`{k}` takes an integer, e.g. `{k} = 5`")),
        }
    }
    if name.is_none() {
        errors.at(
            attr,
            format!("a listener needs a name, which names its consumer group; {USAGE}"),
        );
    }
    name.map(|(name, span)| ListenerAttr {
        name,
        span,
        settings,
        view,
        sends,
    })
}

fn signature(
    f: &ImplItemFn,
    name: String,
    settings: Vec<TokenStream>,
    errors: &mut Errors,
) -> Option<Handler> {
    let sig = &f.sig;
    let mut errors_here = Errors::default();
    if sig.asyncness.is_none() {
        errors_here.at(
            sig.fn_token,
            format!("handlers are async: write `async fn`; {SIGNATURE}"),
        );
    }
    if !sig.generics.params.is_empty() {
        errors_here.at(
            &sig.generics,
            format!("a handler cannot be generic; {SIGNATURE}"),
        );
    }
    let mut inputs = sig.inputs.iter().peekable();
    match inputs.peek() {
        Some(FnArg::Receiver(r)) => {
            if r.reference.is_none() || r.mutability.is_some() {
                errors_here.at(r, format!("take the service by shared reference, `&self`: listeners run concurrently; {SIGNATURE}"));
            }
            inputs.next();
        }
        _ => errors_here.at(
            &sig.ident,
            format!("a handler takes `&self` first; {SIGNATURE}"),
        ),
    }
    let mut typed: Vec<Type> = Vec::new();
    for arg in inputs {
        match arg {
            FnArg::Typed(t) => typed.push((*t.ty).clone()),
            FnArg::Receiver(r) => errors_here.at(r, "unexpected receiver"),
        }
    }
    let event = typed.pop();
    if event.is_none() {
        errors_here.at(
            &sig.ident,
            format!("the last argument is the event the listener handles; {SIGNATURE}"),
        );
    }
    if let ReturnType::Default = sig.output {
        errors_here.at(&sig.ident, "a handler returns `HandlerResult` (`Result<(), HandlerError>`), or `HandlerResult<R>` with a reply `R`: add `-> HandlerResult`");
    }
    for ty in &typed {
        if let Type::Reference(r) = ty {
            errors_here.at(
                r,
                "extractors are taken by value, e.g. `ctx: Context<Self>`",
            );
        }
    }
    if let Some(Type::Reference(r)) = &event {
        errors_here.at(r, "take the event by value: `event: PlaceOrder`");
    }
    if !errors_here.is_empty() {
        errors.extend(errors_here);
        return None;
    }
    Some(Handler {
        name,
        settings,
        view: Vec::new(),
        sends: Vec::new(),
        method: sig.ident.clone(),
        extractors: typed,
        event: event?,
        output: ok_type(&sig.output),
    })
}

/// `T` of a return type `HandlerResult<T>` or `Result<T, E>` (`()` for a bare `HandlerResult`);
/// `None` for anything else (an alias of the application's: the compiler infers it).
fn ok_type(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::Path(path) = &**ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    match (&last.arguments, last.ident.to_string().as_str()) {
        (syn::PathArguments::None, "HandlerResult") => Some(syn::parse_quote!(())),
        (syn::PathArguments::AngleBracketed(args), "HandlerResult" | "Result") => {
            match args.args.first()? {
                syn::GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}
