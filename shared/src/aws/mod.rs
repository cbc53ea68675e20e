//! AWS facts: RDS instances and clusters, their parameters, the VPC network around them and the
//! secrets that hold their passwords; and the client of the artifact bucket.
//!
//! The clients are built once per process (a Lambda cold start or a CLI run) from the standard
//! environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials), so the same binary talks to AWS in
//! production and to the moto emulator in tests. They are built lazily: a job that names its
//! servers by URL never touches AWS at all. The HTTP client is rustls with ring, the same crypto
//! provider as the database connections, and every call has a short timeout so that a function
//! whose subnets cannot reach the AWS APIs learns it in seconds, not at the Lambda timeout.

pub mod ca;
pub mod network;
pub mod rds;
pub mod secrets;

use std::fmt;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig, timeout::TimeoutConfig};
use aws_sdk_rds::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::error::{Error, Result};

/// How long an AWS API call may take in all, retries included. Short: preflight makes a dozen
/// calls, and an unreachable API (no NAT gateway, no VPC endpoint) must show up as a finding.
pub const API_OPERATION_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP connect timeout to an AWS API endpoint.
pub const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// The AWS clients pgferry uses, sharing one configuration and one HTTP client.
#[derive(Clone)]
pub struct Clients {
    pub config: SdkConfig,
    pub rds: aws_sdk_rds::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// The artifact bucket's client; path-style addressing when the endpoint is overridden
    /// (the emulator has no per-bucket host names).
    pub s3: aws_sdk_s3::Client,
}

impl fmt::Debug for Clients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clients")
            .field("region", &self.region())
            .field("endpoint_url", &self.config.endpoint_url())
            .finish_non_exhaustive()
    }
}

/// The loader every client starts from: one HTTPS client, rustls with the ring provider (no
/// OpenSSL, no second crypto provider in the binary), and short timeouts.
fn loader() -> aws_config::ConfigLoader {
    let https =
        aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https();
    let timeouts =
        TimeoutConfig::builder().connect_timeout(API_CONNECT_TIMEOUT).operation_timeout(API_OPERATION_TIMEOUT).build();
    aws_config::defaults(BehaviorVersion::latest()).http_client(https).timeout_config(timeouts)
}

impl Clients {
    /// Clients from the standard AWS environment: region, credentials and `AWS_ENDPOINT_URL`.
    pub async fn from_env() -> Result<Self> {
        let config = loader().load().await;
        Self::from_config(config)
    }

    /// Clients for an explicit endpoint with static credentials: the AWS emulator in tests.
    pub async fn for_endpoint(endpoint_url: &str, region: &str, access_key_id: &str, secret_key: &str) -> Result<Self> {
        let credentials =
            aws_credential_types::Credentials::new(access_key_id, secret_key, None, None, "pgferry-static");
        let config = loader()
            .endpoint_url(endpoint_url)
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(credentials)
            .load()
            .await;
        Self::from_config(config)
    }

    /// Clients sharing an already loaded configuration.
    pub fn from_config(config: SdkConfig) -> Result<Self> {
        if config.region().is_none() {
            return Err(Error::job(
                "the AWS region is unknown: set AWS_REGION (the job names RDS resources, which live in a region)",
            ));
        }
        Ok(Self {
            rds: aws_sdk_rds::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&config).force_path_style(config.endpoint_url().is_some()).build(),
            ),
            config,
        })
    }

    /// The configured region, e.g. `us-east-1`.
    pub fn region(&self) -> &str {
        self.config.region().map_or("", |r| r.as_ref())
    }
}

pub use crate::error::AwsFailure;

/// Classifies an AWS error code (`DBInstanceNotFound`, `AccessDeniedException`…).
pub fn classify_code(code: &str) -> AwsFailure {
    match code {
        "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedOperation"
        | "AuthFailure"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "SignatureDoesNotMatch" => AwsFailure::AccessDenied,
        "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "InternalFailure"
        | "InternalServiceError"
        | "ServiceUnavailable"
        | "InternalError" => AwsFailure::Transient,
        c if c.ends_with("NotFound") || c.ends_with("NotFoundFault") || c.ends_with(".NotFound") => {
            AwsFailure::NotFound
        }
        "ResourceNotFoundException" => AwsFailure::NotFound,
        _ => AwsFailure::Other,
    }
}

/// Turns an SDK error into pgferry's error, keeping the operation, the resource and the code.
pub fn sdk_error<E, R>(operation: &str, resource: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug,
{
    let (failure, code, message) = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            (AwsFailure::Unreachable, None, "no answer from the AWS API endpoint".to_string())
        }
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().map(str::to_string);
            let failure = code.as_deref().map_or(AwsFailure::Other, classify_code);
            (failure, code, e.message().unwrap_or("").to_string())
        }
        SdkError::ResponseError(_) => (AwsFailure::Transient, None, "unreadable response".to_string()),
        _ => (AwsFailure::Other, None, err.to_string()),
    };
    Error::Aws { operation: operation.to_string(), resource: resource.to_string(), failure, code, message }
}

/// `arn:aws:rds:eu-west-1:…` → `eu-west-1`.
pub fn region_of_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn")).then_some(())?;
    parts.nth(2).filter(|r| !r.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_error_codes_are_classified_without_reading_messages() {
        assert_eq!(classify_code("DBInstanceNotFound"), AwsFailure::NotFound);
        assert_eq!(classify_code("DBClusterNotFoundFault"), AwsFailure::NotFound);
        assert_eq!(classify_code("InvalidGroup.NotFound"), AwsFailure::NotFound);
        assert_eq!(classify_code("ResourceNotFoundException"), AwsFailure::NotFound);
        assert_eq!(classify_code("AccessDeniedException"), AwsFailure::AccessDenied);
        assert_eq!(classify_code("UnauthorizedOperation"), AwsFailure::AccessDenied);
        assert_eq!(classify_code("Throttling"), AwsFailure::Transient);
        assert_eq!(classify_code("InvalidParameterValue"), AwsFailure::Other);
    }

    #[test]
    fn the_region_is_read_from_an_arn() {
        assert_eq!(region_of_arn("arn:aws:rds:eu-west-1:123456789012:db:prod"), Some("eu-west-1"));
        assert_eq!(region_of_arn("prod"), None);
    }
}
