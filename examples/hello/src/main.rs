//! A service in 40 lines (the driver in `main` below them): `greet` commands in, `greeted`
//! facts out. `cargo run -p example-hello` starts it on the embedded broker, sends three
//! greetings, waits until they were handled and stops.
use atoll::{event_service, handlers, App, Event, HandlerResult};
use serde::{Deserialize, Serialize};

#[event_service(company = "acme", namespace = "demo", name = "hello")]
pub struct Hello;

#[derive(Debug, Serialize, Deserialize, Event)]
#[event(command, name = "greet", version = 1, service = Hello)]
pub struct Greet {
    #[event(key)]
    pub name: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, Event)]
#[event(fact, name = "greeted", version = 1, service = Hello)]
pub struct Greeted {
    #[event(key)]
    pub name: String,
    pub greeting: String,
}

#[handlers]
impl Hello {
    #[listener(name = "greet")]
    async fn greet(&self, cmd: Greet) -> HandlerResult<Greeted> {
        let greeting = format!("hello, {}", cmd.name);
        println!("{greeting}");
        Ok(Greeted {
            name: cmd.name,
            greeting,
        })
    }
}

#[tokio::main]
async fn main() -> atoll::Result<()> {
    App::from_env()?
        .service(Hello)
        .run_with(async |running| {
            let client = running.client("acme.demo.hello-driver");
            for name in ["ada", "grace", "edsger"] {
                client.send(&Greet { name: name.into() }).await?;
            }
            while running.stats().iter().map(|s| s.handled).sum::<u64>() < 3 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Ok(())
        })
        .await
}
