//! Lambda serves the gateway as an AWS Lambda function. An HTTP event (Function URL, API
//! Gateway, ALB) goes to the same router as the server's, with the invocation's deadline as
//! the request's (`web::Deadline`); an EventBridge scheduled event runs one sweep pass of
//! the fence records (the server runs it on a timer, which a frozen function cannot); any
//! other event is refused with an error that says what the function serves.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::middleware;
use lambda_http::{
    Adapter, Context, LambdaEvent, RequestExt as _, lambda_runtime, request::LambdaRequest,
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::{app::App, telemetry::Telemetry, web::Deadline};

/// MARGIN is kept free before the invocation's deadline: the 503 itself, the telemetry
/// flush that precedes every answer and the runtime's hand-over of it must fit in it.
pub const MARGIN: Duration = Duration::from_millis(500);

/// Event is what one invocation asks for.
#[derive(Debug)]
pub enum Event {
    Http(Box<LambdaRequest>),
    /// An EventBridge scheduled event: run one sweep pass.
    Sweep,
}

impl Event {
    /// of tells the events this function serves apart. Every HTTP event Lambda delivers
    /// carries a `requestContext`; a scheduled event comes from `aws.events`.
    pub fn of(payload: Value) -> Result<Event, String> {
        let field = |k: &str| payload.get(k).and_then(Value::as_str);
        if field("source") == Some("aws.events") && field("detail-type") == Some("Scheduled Event")
        {
            return Ok(Event::Sweep);
        }
        if payload.get("requestContext").is_none() {
            return Err(format!(
                "not an event this function serves: expected an HTTP event (Function URL, API \
                 Gateway, ALB) or an EventBridge scheduled event (source aws.events, detail-type \
                 Scheduled Event); got one with the fields {:?}",
                payload
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>())
                    .unwrap_or_default()
            ));
        }
        serde_json::from_value(payload)
            .map(|r| Event::Http(Box::new(r)))
            .map_err(|e| format!("an HTTP event that cannot be read: {e}"))
    }
}

/// deadline is when an invocation's answer must be sent at the latest: its deadline
/// (milliseconds since the epoch) less `MARGIN`, on the monotonic clock.
#[must_use]
pub fn deadline(context: &Context) -> Deadline {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_millis(context.deadline).saturating_sub(now);
    Deadline(tokio::time::Instant::now() + left.saturating_sub(MARGIN))
}

#[derive(Clone)]
struct Handler {
    app: Arc<App>,
    router: axum::Router,
    telemetry: Telemetry,
}

/// run serves invocations until the runtime stops.
pub async fn run(app: App, telemetry: Telemetry) -> anyhow::Result<()> {
    let handler = Handler {
        router: router(&app, telemetry.clone()),
        app: Arc::new(app),
        telemetry,
    };
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        let handler = handler.clone();
        async move { handler.handle(event).await }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}

/// router is the app's router with the invocation's deadline on every request, flushing
/// telemetry at the end of every invocation, before the answer goes back: Lambda may
/// freeze the instance right after it.
pub fn router(app: &App, telemetry: Telemetry) -> axum::Router {
    app.router().layer(middleware::from_fn(
        move |mut req: axum::extract::Request, next: middleware::Next| {
            let telemetry = telemetry.clone();
            async move {
                if let Some(d) = req.lambda_context_ref().map(deadline) {
                    req.extensions_mut().insert(d);
                }
                let res = next.run(req).await;
                telemetry.flush().await;
                res
            }
        },
    ))
}

impl Handler {
    async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
        let LambdaEvent { payload, context } = event;
        match Event::of(payload)? {
            Event::Http(request) => {
                let adapter = Adapter::from(self.router.clone());
                let answer = adapter.oneshot(LambdaEvent::new(*request, context)).await?;
                Ok(serde_json::to_value(answer)?)
            }
            Event::Sweep => {
                let left = deadline(&context).remaining();
                let swept = tokio::time::timeout(left, self.app.sweep()).await;
                self.telemetry.flush().await;
                match swept {
                    Ok(Ok(n)) => Ok(json!({ "swept": n })),
                    Ok(Err(e)) => Err(format!("sweeping fence records failed: {e}").into()),
                    Err(_) => Err(format!(
                        "sweeping fence records did not finish before the invocation's deadline \
                         (less {MARGIN:?}); the next scheduled pass goes on"
                    )
                    .into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_told_apart_and_others_refused() {
        let scheduled = json!({
            "version": "0", "id": "x", "source": "aws.events",
            "detail-type": "Scheduled Event", "detail": {}
        });
        assert!(matches!(Event::of(scheduled), Ok(Event::Sweep)));
        let http: Value = serde_json::from_str(
            &include_str!("../tests/fixtures/lambda/apigw-v2-template.json").replace("BODY", "{}"),
        )
        .unwrap();
        assert!(matches!(Event::of(http), Ok(Event::Http(_))));
        // Another EventBridge event, and an SQS batch: neither is served.
        for other in [
            json!({"source": "aws.events", "detail-type": "EC2 Instance State-change Notification"}),
            json!({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}),
        ] {
            let e = Event::of(other).unwrap_err();
            assert!(e.contains("not an event this function serves"), "{e}");
        }
    }

    #[test]
    fn the_deadline_keeps_the_margin_free() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let context = |ms: u64| {
            let mut c = Context::default();
            c.deadline = ms;
            c
        };
        let left =
            deadline(&context((now + Duration::from_secs(3)).as_millis() as u64)).remaining();
        assert!(
            left <= Duration::from_secs(3) - MARGIN && left > Duration::from_secs(2),
            "{left:?}"
        );
        // A deadline already past (or closer than the margin) leaves nothing.
        assert_eq!(deadline(&context(1)).remaining(), Duration::ZERO);
    }

    /// The deployment template (deploy/lambda/template.yaml) runs this binary as Lambda
    /// expects it, and the environment it sets, with its parameters given as a user would
    /// and the variables Lambda adds, is a valid configuration in EKS mode.
    #[test]
    fn the_deployment_template_runs_the_package_with_a_valid_configuration() {
        use base64::Engine as _;
        let template: Value =
            serde_yaml_ng::from_str(include_str!("../deploy/lambda/template.yaml")).unwrap();
        let function = &template["Resources"]["Gateway"];
        assert_eq!(function["Type"], "AWS::Serverless::Function");
        let props = &function["Properties"];
        assert_eq!(props["Runtime"], "provided.al2023");
        assert_eq!(props["Handler"], "bootstrap");
        assert_eq!(
            props["Architectures"],
            json!(["x86_64"]),
            "hack/musl.sh builds x86_64"
        );
        assert_eq!(
            props["CodeUri"], "../../target/lambda/signal-gateway-lambda.zip",
            "what hack/lambda.sh prints"
        );
        let timeout = props["Timeout"].as_u64().unwrap();
        assert!(
            Duration::from_secs(timeout) > MARGIN * 10 && timeout <= 30,
            "room for a request, within an HTTP API's 30 s: {timeout}"
        );
        assert_eq!(props["FunctionUrlConfig"]["AuthType"], "NONE");
        let schedule = &props["Events"]["Sweep"];
        assert_eq!(schedule["Type"], "Schedule");
        assert_eq!(schedule["Properties"]["Schedule"], "rate(10 minutes)");
        assert_eq!(
            props["Role"]["Fn::GetAtt"],
            json!(["GatewayRole", "Arn"]),
            "the role the access entry maps"
        );
        assert_eq!(
            template["Resources"]["GatewayAccessEntry"]["Properties"]["PrincipalArn"],
            props["Role"]
        );

        let ca = rcgen::generate_simple_self_signed(vec!["kubernetes".into()]).unwrap();
        let given = [
            ("ClusterName", "prod".to_owned()),
            (
                "ClusterEndpoint",
                "https://ABCD.gr7.eu-west-1.eks.amazonaws.com".to_owned(),
            ),
            (
                "ClusterCaData",
                base64::engine::general_purpose::STANDARD.encode(ca.cert.pem()),
            ),
        ];
        let parameter = |name: &str| -> String {
            given
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    template["Parameters"][name]["Default"]
                        .as_str()
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| panic!("parameter {name} has no value"))
        };
        let mut vars: Vec<(String, String)> = props["Environment"]["Variables"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    other => parameter(other["Ref"].as_str().expect("a Ref")),
                };
                (k.clone(), value)
            })
            .collect();
        // What Lambda sets itself (reserved: the template cannot).
        for (k, v) in [
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
        ] {
            vars.push((k.into(), v.into()));
        }
        let config =
            crate::config::Config::from_vars(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap();
        let eks = config.eks.expect("EKS mode");
        assert_eq!(eks.cluster_name, "prod");
        assert_eq!(config.namespace, "kubernaut-system");
        assert!(matches!(
            config.auth,
            crate::config::AuthMode::TokenReview(_)
        ));
    }
}
