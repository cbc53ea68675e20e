//! The network path from the pgferry functions to a database: routes, security groups, and the
//! way to the AWS APIs.
//!
//! A connection from a Lambda function in a VPC to an RDS instance needs three things, and the
//! usual symptom of a missing one — a connect timeout — says nothing about which:
//!
//! 1. a **route**: same VPC (the `local` route), or a peering / transit gateway route to the
//!    database's VPC, or — for a publicly accessible instance — a NAT gateway to the internet;
//! 2. an **inbound rule** in one of the database's security groups allowing TCP on its port from
//!    one of the function's security groups or from a CIDR holding *every* subnet the function may
//!    be placed in (Lambda picks one per execution environment: a rule covering only some subnets
//!    makes connections fail at random);
//! 3. an **outbound rule** in the function's security groups towards the database.
//!
//! Besides, the functions call the RDS and Secrets Manager APIs, which a VPC-attached function
//! reaches only through a NAT gateway or interface VPC endpoints (with private DNS).
//!
//! Facts are loaded with `ec2:Describe*` ([`load_function`], [`load_db`]); the analysis
//! ([`analyse_path`], [`analyse_api_access`]) is pure, so every rule of it is unit-tested. Each
//! failure names the security group or subnet, the missing rule, and the AWS CLI command that
//! adds it. Network ACLs and IPv6 paths are not evaluated (said so in the pass verdicts).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::rds::DbFacts;
use super::{Clients, sdk_error};
use crate::error::Result;

/// An IPv4 CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: u32,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/16` (or a bare address as /32).
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok()?),
            None => (text, 32),
        };
        if prefix > 32 {
            return None;
        }
        let addr: Ipv4Addr = addr.trim().parse().ok()?;
        Some(Self { network: u32::from(addr) & Self::mask(prefix), prefix })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
    }

    /// Whether `other` lies entirely inside this block.
    pub fn contains(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && (other.network & Self::mask(self.prefix)) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

/// One security group rule (inbound or outbound), as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// `-1` (all), `tcp`, `6`, `udp`…
    pub protocol: String,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub cidrs: Vec<Cidr>,
    /// Security groups referenced by the rule.
    pub groups: Vec<String>,
    /// Managed prefix lists, which pgferry does not expand.
    pub prefix_lists: Vec<String>,
}

impl Rule {
    /// Whether the rule lets TCP traffic to `port` through.
    pub fn covers_tcp_port(&self, port: u16) -> bool {
        match self.protocol.as_str() {
            "-1" | "all" => true,
            "tcp" | "6" => match (self.from_port, self.to_port) {
                (Some(from), Some(to)) => (from == -1 && to == -1) || (from..=to).contains(&i32::from(port)),
                _ => true,
            },
            _ => false,
        }
    }

    /// `tcp 5432` / `tcp 5000-6000` / `all traffic`.
    pub fn ports(&self) -> String {
        match (self.protocol.as_str(), self.from_port, self.to_port) {
            ("-1" | "all", _, _) => "all traffic".to_string(),
            (p, Some(f), Some(t)) if f == t => format!("{} {f}", protocol_name(p)),
            (p, Some(f), Some(t)) => format!("{} {f}-{t}", protocol_name(p)),
            (p, _, _) => protocol_name(p).to_string(),
        }
    }

    /// The peers of the rule, for messages.
    pub fn peers(&self) -> Vec<String> {
        let mut out: Vec<String> = self.groups.clone();
        out.extend(self.cidrs.iter().map(Cidr::to_string));
        out.extend(self.prefix_lists.iter().cloned());
        out
    }
}

fn protocol_name(p: &str) -> &str {
    match p {
        "6" => "tcp",
        "17" => "udp",
        other => other,
    }
}

/// A security group with its rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub vpc_id: Option<String>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

/// A subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub cidr: Cidr,
}

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    Local,
    NatGateway(String),
    InternetGateway(String),
    Peering(String),
    TransitGateway(String),
    /// Instances, interfaces, VPN gateways, blackholes…
    Other(String),
}

/// One route of a route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Cidr,
    pub target: RouteTarget,
}

/// An interface or gateway VPC endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcEndpoint {
    pub id: String,
    /// `com.amazonaws.us-east-1.secretsmanager`.
    pub service_name: String,
    pub private_dns: bool,
    /// `available`, `pending`… (lower case).
    pub state: String,
}

/// Where the pgferry functions run: their security groups, subnets, routes and VPC endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionPlacement {
    pub security_groups: Vec<SecurityGroup>,
    pub subnets: Vec<Subnet>,
    /// Routes of each subnet's route table (explicit association, else the VPC's main table).
    pub routes: BTreeMap<String, Vec<Route>>,
    /// The route table id of each subnet, for the commands that add a route.
    pub route_table_of: BTreeMap<String, String>,
    pub endpoints: Vec<VpcEndpoint>,
    /// Public addresses of the NAT gateways the subnets route through.
    pub nat_public_ips: BTreeMap<String, Vec<Cidr>>,
}

impl FunctionPlacement {
    /// The VPC the function's subnets are in (Lambda requires one VPC).
    pub fn vpc_id(&self) -> Option<&str> {
        self.subnets.first().map(|s| s.vpc_id.as_str())
    }

    fn sg_ids(&self) -> Vec<&str> {
        self.security_groups.iter().map(|g| g.id.as_str()).collect()
    }

    fn subnet_ids(&self) -> Vec<&str> {
        self.subnets.iter().map(|s| s.id.as_str()).collect()
    }

    /// NAT gateway used for 0.0.0.0/0 by a subnet, if any.
    fn nat_of(&self, subnet: &str) -> Option<&str> {
        self.routes.get(subnet)?.iter().find_map(|r| match &r.target {
            RouteTarget::NatGateway(id) if r.destination.prefix == 0 => Some(id.as_str()),
            _ => None,
        })
    }

    fn igw_of(&self, subnet: &str) -> Option<&str> {
        self.routes.get(subnet)?.iter().find_map(|r| match &r.target {
            RouteTarget::InternetGateway(id) if r.destination.prefix == 0 => Some(id.as_str()),
            _ => None,
        })
    }
}

/// A database's side of the path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbPlacement {
    /// `RDS instance prod-db`.
    pub label: String,
    pub port: u16,
    pub security_groups: Vec<SecurityGroup>,
    pub subnets: Vec<Subnet>,
    pub vpc_id: Option<String>,
    pub vpc_cidrs: Vec<Cidr>,
    pub publicly_accessible: Option<bool>,
}

/// Outcome of one analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    Open,
    /// Something pgferry cannot evaluate (prefix lists, unknown placement).
    Unknown,
    Blocked,
}

/// A verdict with the sentence explaining it and the commands that fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    pub detail: String,
    pub fixes: Vec<String>,
}

impl Finding {
    fn open(detail: String) -> Self {
        Self { verdict: Verdict::Open, detail, fixes: vec![] }
    }
    fn unknown(detail: String, fixes: Vec<String>) -> Self {
        Self { verdict: Verdict::Unknown, detail, fixes }
    }
    fn blocked(detail: String, fixes: Vec<String>) -> Self {
        Self { verdict: Verdict::Blocked, detail, fixes }
    }
}

// ------------------------------------------------------------------------------------------------
// Loading

fn convert_rule(p: &aws_sdk_ec2::types::IpPermission) -> Rule {
    Rule {
        protocol: p.ip_protocol().unwrap_or("-1").to_string(),
        from_port: p.from_port(),
        to_port: p.to_port(),
        cidrs: p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).filter_map(Cidr::parse).collect(),
        groups: p.user_id_group_pairs().iter().filter_map(|g| g.group_id()).map(str::to_string).collect(),
        prefix_lists: p.prefix_list_ids().iter().filter_map(|l| l.prefix_list_id()).map(str::to_string).collect(),
    }
}

/// Describes security groups by id.
pub async fn security_groups(clients: &Clients, ids: &[String]) -> Result<Vec<SecurityGroup>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let out = clients
        .ec2
        .describe_security_groups()
        .set_group_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| sdk_error("ec2:DescribeSecurityGroups", &ids.join(", "), e))?;
    let mut groups: Vec<SecurityGroup> = out
        .security_groups()
        .iter()
        .map(|g| SecurityGroup {
            id: g.group_id().unwrap_or("").to_string(),
            name: g.group_name().unwrap_or("").to_string(),
            vpc_id: g.vpc_id().map(str::to_string),
            ingress: g.ip_permissions().iter().map(convert_rule).collect(),
            egress: g.ip_permissions_egress().iter().map(convert_rule).collect(),
        })
        .collect();
    groups.sort_by_key(|g| ids.iter().position(|i| *i == g.id));
    Ok(groups)
}

/// Describes subnets by id.
pub async fn subnets(clients: &Clients, ids: &[String]) -> Result<Vec<Subnet>> {
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let out = clients
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| sdk_error("ec2:DescribeSubnets", &ids.join(", "), e))?;
    let mut subnets: Vec<Subnet> = out
        .subnets()
        .iter()
        .filter_map(|s| {
            Some(Subnet {
                id: s.subnet_id()?.to_string(),
                vpc_id: s.vpc_id().unwrap_or("").to_string(),
                cidr: Cidr::parse(s.cidr_block()?)?,
            })
        })
        .collect();
    subnets.sort_by_key(|s| ids.iter().position(|i| *i == s.id));
    Ok(subnets)
}

fn convert_route(r: &aws_sdk_ec2::types::Route) -> Option<Route> {
    let destination = Cidr::parse(r.destination_cidr_block()?)?;
    let target = if let Some(id) = r.nat_gateway_id() {
        RouteTarget::NatGateway(id.to_string())
    } else if let Some(id) = r.vpc_peering_connection_id() {
        RouteTarget::Peering(id.to_string())
    } else if let Some(id) = r.transit_gateway_id() {
        RouteTarget::TransitGateway(id.to_string())
    } else if let Some(id) = r.gateway_id() {
        match id {
            "local" => RouteTarget::Local,
            id if id.starts_with("igw-") => RouteTarget::InternetGateway(id.to_string()),
            id => RouteTarget::Other(id.to_string()),
        }
    } else {
        RouteTarget::Other(r.instance_id().or(r.network_interface_id()).unwrap_or("unknown").to_string())
    };
    let blackhole = r.state().is_some_and(|s| s.as_str() == "blackhole");
    Some(Route { destination, target: if blackhole { RouteTarget::Other("blackhole".to_string()) } else { target } })
}

/// Loads where the functions run: security groups, subnets, their route tables, VPC endpoints and
/// the public addresses of the NAT gateways they route through.
pub async fn load_function(
    clients: &Clients,
    security_group_ids: &[String],
    subnet_ids: &[String],
) -> Result<FunctionPlacement> {
    let mut placement = FunctionPlacement {
        security_groups: security_groups(clients, security_group_ids).await?,
        subnets: subnets(clients, subnet_ids).await?,
        ..Default::default()
    };
    let Some(vpc_id) = placement.vpc_id().map(str::to_string) else {
        return Ok(placement);
    };
    let tables = clients
        .ec2
        .describe_route_tables()
        .filters(aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(&vpc_id).build())
        .send()
        .await
        .map_err(|e| sdk_error("ec2:DescribeRouteTables", &vpc_id, e))?;
    let mut main: Option<(String, Vec<Route>)> = None;
    let mut explicit: BTreeMap<String, (String, Vec<Route>)> = BTreeMap::new();
    for t in tables.route_tables() {
        let id = t.route_table_id().unwrap_or("").to_string();
        let routes: Vec<Route> = t.routes().iter().filter_map(convert_route).collect();
        for a in t.associations() {
            if a.main() == Some(true) {
                main = Some((id.clone(), routes.clone()));
            }
            if let Some(subnet) = a.subnet_id() {
                explicit.insert(subnet.to_string(), (id.clone(), routes.clone()));
            }
        }
    }
    for subnet in &placement.subnets {
        if let Some((table, routes)) = explicit.get(&subnet.id).or(main.as_ref()) {
            placement.routes.insert(subnet.id.clone(), routes.clone());
            placement.route_table_of.insert(subnet.id.clone(), table.clone());
        }
    }
    let endpoints = clients
        .ec2
        .describe_vpc_endpoints()
        .filters(aws_sdk_ec2::types::Filter::builder().name("vpc-id").values(&vpc_id).build())
        .send()
        .await
        .map_err(|e| sdk_error("ec2:DescribeVpcEndpoints", &vpc_id, e))?;
    placement.endpoints = endpoints
        .vpc_endpoints()
        .iter()
        .map(|e| VpcEndpoint {
            id: e.vpc_endpoint_id().unwrap_or("").to_string(),
            service_name: e.service_name().unwrap_or("").to_string(),
            private_dns: e.private_dns_enabled().unwrap_or(false),
            state: e.state().map_or("unknown".to_string(), |s| s.as_str().to_ascii_lowercase()),
        })
        .collect();
    let nats: BTreeSet<String> =
        placement.subnets.iter().filter_map(|s| placement.nat_of(&s.id)).map(str::to_string).collect();
    if !nats.is_empty() {
        let out = clients
            .ec2
            .describe_nat_gateways()
            .set_nat_gateway_ids(Some(nats.iter().cloned().collect()))
            .send()
            .await
            .map_err(|e| sdk_error("ec2:DescribeNatGateways", &vpc_id, e))?;
        for nat in out.nat_gateways() {
            let ips =
                nat.nat_gateway_addresses().iter().filter_map(|a| a.public_ip()).filter_map(Cidr::parse).collect();
            placement.nat_public_ips.insert(nat.nat_gateway_id().unwrap_or("").to_string(), ips);
        }
    }
    Ok(placement)
}

/// Loads a database's security groups, subnets and VPC address ranges.
pub async fn load_db(clients: &Clients, db: &DbFacts, port: u16) -> Result<DbPlacement> {
    let mut placement = DbPlacement {
        label: db.label(),
        port,
        security_groups: security_groups(clients, &db.security_group_ids).await?,
        subnets: subnets(clients, &db.subnet_ids).await?,
        vpc_id: db.vpc_id.clone(),
        vpc_cidrs: vec![],
        publicly_accessible: db.publicly_accessible,
    };
    if let Some(vpc) = &db.vpc_id {
        let out =
            clients.ec2.describe_vpcs().vpc_ids(vpc).send().await.map_err(|e| sdk_error("ec2:DescribeVpcs", vpc, e))?;
        for v in out.vpcs() {
            placement.vpc_cidrs.extend(v.cidr_block().and_then(Cidr::parse));
            placement
                .vpc_cidrs
                .extend(v.cidr_block_association_set().iter().filter_map(|a| a.cidr_block()).filter_map(Cidr::parse));
        }
        placement.vpc_cidrs.sort();
        placement.vpc_cidrs.dedup();
    }
    Ok(placement)
}

// ------------------------------------------------------------------------------------------------
// Analysis

/// How packets get from the function to the database.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Path {
    /// Same VPC, or a peering / transit gateway route: private addresses, security group
    /// references work.
    Private(String),
    /// Through NAT gateways to a publicly accessible endpoint: the database sees the NAT's address.
    Public { nat_ips: Vec<Cidr> },
}

fn route_to_db(func: &FunctionPlacement, db: &DbPlacement) -> std::result::Result<Path, Finding> {
    let (Some(fvpc), Some(dvpc)) = (func.vpc_id(), db.vpc_id.as_deref()) else {
        return Err(Finding::unknown(
            format!("the VPC of {} or of the functions is unknown; the path was not analysed", db.label),
            vec![],
        ));
    };
    if fvpc == dvpc {
        return Ok(Path::Private(format!("same VPC {dvpc}")));
    }
    // Every subnet the function may run in needs a route covering the database's VPC.
    let targets: Vec<Cidr> =
        if db.vpc_cidrs.is_empty() { db.subnets.iter().map(|s| s.cidr).collect() } else { db.vpc_cidrs.clone() };
    let mut via = BTreeSet::new();
    let mut unrouted = Vec::new();
    for subnet in &func.subnets {
        let routes = func.routes.get(&subnet.id).map(Vec::as_slice).unwrap_or_default();
        let mut routed = !targets.is_empty();
        for t in &targets {
            // Longest prefix wins, as in the VPC router.
            match routes.iter().filter(|r| r.destination.contains(t)).max_by_key(|r| r.destination.prefix) {
                Some(Route { target: RouteTarget::Peering(id) | RouteTarget::TransitGateway(id), .. }) => {
                    via.insert(id.clone());
                }
                _ => routed = false,
            }
        }
        if !routed {
            unrouted.push(subnet);
        }
    }
    if unrouted.is_empty() {
        return Ok(Path::Private(format!("{fvpc} → {dvpc} via {}", via.into_iter().collect::<Vec<_>>().join(", "))));
    }
    // No private route: a publicly accessible endpoint is reachable through NAT gateways.
    let nat_ips: Vec<Cidr> = func
        .subnets
        .iter()
        .filter_map(|s| func.nat_of(&s.id))
        .flat_map(|n| func.nat_public_ips.get(n).cloned().unwrap_or_default())
        .collect();
    let all_nat = func.subnets.iter().all(|s| func.nat_of(&s.id).is_some());
    if db.publicly_accessible == Some(true) && all_nat {
        return Ok(Path::Public { nat_ips });
    }
    let dest = targets.first().map_or_else(|| "<the database VPC's CIDR>".to_string(), Cidr::to_string);
    let table = unrouted.first().and_then(|s| func.route_table_of.get(&s.id)).map_or("<route table>", String::as_str);
    Err(Finding::blocked(
        format!(
            "no route from the functions' VPC {fvpc} (subnets {}) to {}'s VPC {dvpc} ({}), and {} is {}",
            unrouted.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", "),
            db.label,
            targets.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", "),
            db.label,
            if db.publicly_accessible == Some(true) {
                "publicly accessible but the subnets have no NAT gateway route"
            } else {
                "not publicly accessible"
            }
        ),
        vec![
            format!("run the functions in {dvpc} (their VpcConfig subnets), or peer the VPCs:"),
            format!("aws ec2 create-vpc-peering-connection --vpc-id {fvpc} --peer-vpc-id {dvpc}"),
            format!(
                "aws ec2 create-route --route-table-id {table} --destination-cidr-block {dest} --vpc-peering-connection-id <pcx-id>"
            ),
        ],
    ))
}

/// What the database's security groups allow on its port.
fn ingress(func: &FunctionPlacement, db: &DbPlacement, path: &Path) -> Finding {
    let port = db.port;
    let db_sgs = db.security_groups.iter().map(|g| g.id.as_str()).collect::<Vec<_>>().join(", ");
    let fn_sgs = func.sg_ids();
    let mut on_port: Vec<String> = Vec::new();
    let mut near_misses: Vec<String> = Vec::new();
    let mut prefix_lists = false;
    // Each source the functions' traffic may carry, and the rule that admits it.
    let mut by_group: Option<String> = None;
    let sources: Vec<(String, Cidr)> = match path {
        Path::Private(_) => func.subnets.iter().map(|s| (s.id.clone(), s.cidr)).collect(),
        Path::Public { nat_ips } => nat_ips.iter().map(|ip| (format!("NAT address {ip}"), *ip)).collect(),
    };
    let mut admitted: BTreeMap<String, String> = BTreeMap::new();
    for sg in &db.security_groups {
        for rule in &sg.ingress {
            let names_us = rule.groups.iter().any(|g| fn_sgs.contains(&g.as_str()));
            if !rule.covers_tcp_port(port) {
                if names_us || sources.iter().any(|(_, c)| rule.cidrs.iter().any(|r| r.contains(c))) {
                    near_misses.push(format!(
                        "{} allows {} from {}, not {port}",
                        sg.id,
                        rule.ports(),
                        rule.peers().join(", ")
                    ));
                }
                continue;
            }
            on_port.extend(rule.peers().into_iter().map(|p| format!("{p} ({})", sg.id)));
            prefix_lists |= !rule.prefix_lists.is_empty();
            if names_us && matches!(path, Path::Private(_)) && by_group.is_none() {
                let g = rule.groups.iter().find(|g| fn_sgs.contains(&g.as_str())).cloned().unwrap_or_default();
                by_group = Some(format!("{} allows {} from {g}", sg.id, rule.ports()));
            }
            for (name, cidr) in &sources {
                if let Some(block) = rule.cidrs.iter().find(|r| r.contains(cidr)) {
                    admitted
                        .entry(name.clone())
                        .or_insert_with(|| format!("{} allows {} from {block}", sg.id, rule.ports()));
                }
            }
        }
    }
    if let Some(rule) = by_group {
        return Finding::open(rule);
    }
    if !sources.is_empty() && sources.iter().all(|(name, _)| admitted.contains_key(name)) {
        let mut rules: Vec<&String> = admitted.values().collect();
        rules.dedup();
        return Finding::open(rules.into_iter().cloned().collect::<Vec<_>>().join("; "));
    }
    let target_sg = db.security_groups.first().map_or("<db security group>", |g| g.id.as_str());
    let allowed = if on_port.is_empty() { "nothing".to_string() } else { format!("only {}", on_port.join(", ")) };
    let mut detail = format!("{}'s security group(s) {db_sgs} allow {allowed} on tcp {port}", db.label);
    if !near_misses.is_empty() {
        detail.push_str(&format!(" ({})", near_misses.join("; ")));
    }
    let (missing, fix) = match path {
        Path::Private(_) => {
            let source = fn_sgs.first().copied().unwrap_or("<function security group>");
            let partial: Vec<&str> =
                sources.iter().filter(|(n, _)| !admitted.contains_key(n)).map(|(n, _)| n.as_str()).collect();
            if !admitted.is_empty() {
                detail.push_str(&format!(
                    "; the CIDR rules cover some of the functions' subnets but not {}: invocations placed there time out",
                    partial.join(", ")
                ));
            }
            (
                format!("missing inbound rule on {target_sg}: tcp {port} from {source}"),
                format!(
                    "aws ec2 authorize-security-group-ingress --group-id {target_sg} --protocol tcp --port {port} --source-group {source}"
                ),
            )
        }
        Path::Public { nat_ips } => {
            let ip = nat_ips.first().map_or("<NAT gateway public IP>/32".to_string(), Cidr::to_string);
            detail.push_str("; the functions reach it over the internet through NAT gateways, where security group references do not apply");
            (
                format!("missing inbound rule on {target_sg}: tcp {port} from {ip}"),
                format!(
                    "aws ec2 authorize-security-group-ingress --group-id {target_sg} --protocol tcp --port {port} --cidr {ip}"
                ),
            )
        }
    };
    detail.push_str(&format!("; the functions run in {} — {missing}", fn_sgs.join(", ")));
    if prefix_lists && admitted.is_empty() {
        return Finding::unknown(format!("{detail}; prefix-list rules were not expanded and may allow it"), vec![fix]);
    }
    Finding::blocked(detail, vec![fix])
}

/// What the functions' security groups let out towards the database.
fn egress(func: &FunctionPlacement, db: &DbPlacement, path: &Path) -> Finding {
    let port = db.port;
    let db_sgs: Vec<&str> = db.security_groups.iter().map(|g| g.id.as_str()).collect();
    let destinations: Vec<Cidr> = match path {
        Path::Private(_) => db.subnets.iter().map(|s| s.cidr).collect(),
        // The public address of the endpoint is not known ahead: only an open rule is certain.
        Path::Public { .. } => vec![Cidr { network: 0, prefix: 0 }],
    };
    for sg in &func.security_groups {
        for rule in sg.egress.iter().filter(|r| r.covers_tcp_port(port)) {
            let to_group = matches!(path, Path::Private(_)) && rule.groups.iter().any(|g| db_sgs.contains(&g.as_str()));
            let to_cidrs =
                !destinations.is_empty() && destinations.iter().all(|d| rule.cidrs.iter().any(|c| c.contains(d)));
            if to_group || to_cidrs {
                return Finding::open(format!("{} lets {} out to {}", sg.id, rule.ports(), rule.peers().join(", ")));
            }
        }
    }
    let source = func.security_groups.first().map_or("<function security group>", |g| g.id.as_str());
    let peer = match path {
        Path::Private(_) => {
            format!("UserIdGroupPairs=[{{GroupId={}}}]", db_sgs.first().copied().unwrap_or("<db security group>"))
        }
        Path::Public { .. } => "IpRanges=[{CidrIp=0.0.0.0/0}]".to_string(),
    };
    Finding::blocked(
        format!(
            "the functions' security group(s) {} have no outbound rule for tcp {port} to {} — missing outbound rule on {source}",
            func.sg_ids().join(", "),
            db.label
        ),
        vec![format!(
            "aws ec2 authorize-security-group-egress --group-id {source} --ip-permissions 'IpProtocol=tcp,FromPort={port},ToPort={port},{peer}'"
        )],
    )
}

/// Whether the functions can open TCP connections to the database: route, inbound and outbound
/// security group rules.
pub fn analyse_path(func: &FunctionPlacement, db: &DbPlacement) -> Finding {
    let path = match route_to_db(func, db) {
        Ok(path) => path,
        Err(finding) => return finding,
    };
    let inbound = ingress(func, db, &path);
    let outbound = egress(func, db, &path);
    let route = match &path {
        Path::Private(how) => how.clone(),
        Path::Public { .. } => "through NAT gateways to the public endpoint".to_string(),
    };
    match (inbound.verdict, outbound.verdict) {
        (Verdict::Open, Verdict::Open) => {
            Finding::open(format!("{route}; {}; {} (network ACLs not evaluated)", inbound.detail, outbound.detail))
        }
        _ => {
            let worst = if inbound.verdict == Verdict::Blocked || outbound.verdict == Verdict::Blocked {
                Verdict::Blocked
            } else {
                Verdict::Unknown
            };
            let parts: Vec<String> =
                [&inbound, &outbound].iter().filter(|f| f.verdict != Verdict::Open).map(|f| f.detail.clone()).collect();
            Finding {
                verdict: worst,
                detail: format!("{route}: {}", parts.join("; ")),
                fixes: inbound.fixes.into_iter().chain(outbound.fixes).collect(),
            }
        }
    }
}

/// An AWS API the functions call from inside the VPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Rds,
    SecretsManager,
}

impl Api {
    fn endpoint_suffix(self) -> &'static str {
        match self {
            Self::Rds => "rds",
            Self::SecretsManager => "secretsmanager",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Self::Rds => "the RDS API",
            Self::SecretsManager => "Secrets Manager",
        }
    }
}

/// Whether every subnet of the functions reaches the given AWS APIs: a NAT gateway default route,
/// or an available interface VPC endpoint with private DNS for each API.
pub fn analyse_api_access(func: &FunctionPlacement, region: &str, apis: &[Api]) -> Finding {
    let Some(vpc) = func.vpc_id() else {
        return Finding::unknown("the functions' subnets are unknown".to_string(), vec![]);
    };
    let without_nat: Vec<&Subnet> = func.subnets.iter().filter(|s| func.nat_of(&s.id).is_none()).collect();
    if without_nat.is_empty() {
        let nats: BTreeSet<&str> = func.subnets.iter().filter_map(|s| func.nat_of(&s.id)).collect();
        return Finding::open(format!(
            "subnets {} reach the AWS APIs through NAT gateway(s) {}",
            func.subnet_ids().join(", "),
            nats.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut missing = Vec::new();
    let mut via = Vec::new();
    for api in apis {
        let service = format!("com.amazonaws.{region}.{}", api.endpoint_suffix());
        match func.endpoints.iter().find(|e| e.service_name == service) {
            Some(e) if e.state == "available" && e.private_dns => via.push(format!("{} via {}", api.label(), e.id)),
            Some(e) if !e.private_dns => {
                missing.push((*api, service, format!("endpoint {} has private DNS disabled", e.id)))
            }
            Some(e) => missing.push((*api, service, format!("endpoint {} is {}", e.id, e.state))),
            None => missing.push((*api, service, "no VPC endpoint".to_string())),
        }
    }
    if missing.is_empty() {
        return Finding::open(format!(
            "subnets {} have no NAT route; {}",
            func.subnet_ids().join(", "),
            via.join(", ")
        ));
    }
    let names: Vec<&str> = without_nat.iter().map(|s| s.id.as_str()).collect();
    let igw_note = if without_nat.iter().any(|s| func.igw_of(&s.id).is_some()) {
        " (a route to an internet gateway does not help: Lambda functions get no public address)"
    } else {
        ""
    };
    let sg = func.security_groups.first().map_or("<function security group>", |g| g.id.as_str());
    let fixes = missing
        .iter()
        .filter(|(_, _, why)| why == "no VPC endpoint")
        .map(|(_, service, _)| {
            format!(
                "aws ec2 create-vpc-endpoint --vpc-id {vpc} --vpc-endpoint-type Interface --service-name {service} \
                 --subnet-ids {} --security-group-ids {sg} --private-dns-enabled",
                names.join(" ")
            )
        })
        .chain(std::iter::once("or route 0.0.0.0/0 of these subnets to a NAT gateway".to_string()))
        .collect();
    Finding::blocked(
        format!(
            "subnets {} have no route to a NAT gateway{igw_note} and cannot reach {}",
            names.join(", "),
            missing.iter().map(|(api, _, why)| format!("{} ({why})", api.label())).collect::<Vec<_>>().join(", ")
        ),
        fixes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    fn tcp(from: i32, to: i32, groups: &[&str], cidrs: &[&str]) -> Rule {
        Rule {
            protocol: "tcp".into(),
            from_port: Some(from),
            to_port: Some(to),
            cidrs: cidrs.iter().map(|c| cidr(c)).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            prefix_lists: vec![],
        }
    }

    fn all_out() -> Rule {
        Rule { protocol: "-1".into(), cidrs: vec![cidr("0.0.0.0/0")], ..Default::default() }
    }

    fn sg(id: &str, vpc: &str, ingress: Vec<Rule>, egress: Vec<Rule>) -> SecurityGroup {
        SecurityGroup { id: id.into(), name: id.into(), vpc_id: Some(vpc.into()), ingress, egress }
    }

    fn subnet(id: &str, vpc: &str, c: &str) -> Subnet {
        Subnet { id: id.into(), vpc_id: vpc.into(), cidr: cidr(c) }
    }

    fn function(vpc: &str, subnets: Vec<Subnet>) -> FunctionPlacement {
        let mut f = FunctionPlacement {
            security_groups: vec![sg("sg-fn", vpc, vec![], vec![all_out()])],
            subnets,
            ..Default::default()
        };
        for s in f.subnets.clone() {
            f.routes.insert(s.id.clone(), vec![Route { destination: cidr("10.0.0.0/16"), target: RouteTarget::Local }]);
            f.route_table_of.insert(s.id.clone(), "rtb-fn".into());
        }
        f
    }

    fn db(ingress: Vec<Rule>) -> DbPlacement {
        DbPlacement {
            label: "RDS instance prod-db".into(),
            port: 5432,
            security_groups: vec![sg("sg-db", "vpc-a", ingress, vec![all_out()])],
            subnets: vec![subnet("subnet-db1", "vpc-a", "10.0.8.0/24"), subnet("subnet-db2", "vpc-a", "10.0.9.0/24")],
            vpc_id: Some("vpc-a".into()),
            vpc_cidrs: vec![cidr("10.0.0.0/16")],
            publicly_accessible: Some(false),
        }
    }

    fn fn_a() -> FunctionPlacement {
        function(
            "vpc-a",
            vec![subnet("subnet-f1", "vpc-a", "10.0.1.0/24"), subnet("subnet-f2", "vpc-a", "10.0.2.0/24")],
        )
    }

    #[test]
    fn cidr_containment_follows_prefixes() {
        assert!(cidr("10.0.0.0/16").contains(&cidr("10.0.1.0/24")));
        assert!(!cidr("10.0.1.0/24").contains(&cidr("10.0.0.0/16")));
        assert!(cidr("0.0.0.0/0").contains(&cidr("192.168.1.7/32")));
        assert!(!cidr("10.0.1.0/24").contains(&cidr("10.0.2.0/24")));
        assert_eq!(cidr("10.0.1.77/24").to_string(), "10.0.1.0/24");
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn an_sg_to_sg_rule_on_the_port_opens_the_path() {
        let f = analyse_path(&fn_a(), &db(vec![tcp(5432, 5432, &["sg-fn"], &[])]));
        assert_eq!(f.verdict, Verdict::Open, "{}", f.detail);
        assert!(f.detail.contains("sg-db allows tcp 5432 from sg-fn"), "{}", f.detail);
        assert!(f.detail.contains("same VPC vpc-a"), "{}", f.detail);
    }

    #[test]
    fn a_rule_for_another_group_is_a_missing_rule_named_with_its_fix() {
        let f = analyse_path(&fn_a(), &db(vec![tcp(5432, 5432, &["sg-def"], &[])]));
        assert_eq!(f.verdict, Verdict::Blocked);
        assert!(f.detail.contains("allow only sg-def (sg-db) on tcp 5432"), "{}", f.detail);
        assert!(f.detail.contains("missing inbound rule on sg-db: tcp 5432 from sg-fn"), "{}", f.detail);
        assert_eq!(
            f.fixes,
            vec![
                "aws ec2 authorize-security-group-ingress --group-id sg-db --protocol tcp --port 5432 --source-group sg-fn"
            ]
        );
    }

    #[test]
    fn a_port_range_covering_the_port_opens_the_path_and_one_that_misses_it_is_named() {
        let open = analyse_path(&fn_a(), &db(vec![tcp(5000, 6000, &["sg-fn"], &[])]));
        assert_eq!(open.verdict, Verdict::Open, "{}", open.detail);
        assert!(open.detail.contains("tcp 5000-6000"), "{}", open.detail);
        let wrong = analyse_path(&fn_a(), &db(vec![tcp(3306, 3306, &["sg-fn"], &[])]));
        assert_eq!(wrong.verdict, Verdict::Blocked);
        assert!(wrong.detail.contains("sg-db allows tcp 3306 from sg-fn, not 5432"), "{}", wrong.detail);
        let all = analyse_path(
            &fn_a(),
            &db(vec![Rule { protocol: "-1".into(), groups: vec!["sg-fn".into()], ..Default::default() }]),
        );
        assert_eq!(all.verdict, Verdict::Open, "{}", all.detail);
    }

    #[test]
    fn cidr_rules_must_cover_every_subnet_the_function_may_run_in() {
        let open = analyse_path(&fn_a(), &db(vec![tcp(5432, 5432, &[], &["10.0.0.0/16"])]));
        assert_eq!(open.verdict, Verdict::Open, "{}", open.detail);
        assert!(open.detail.contains("from 10.0.0.0/16"), "{}", open.detail);
        let partial = analyse_path(&fn_a(), &db(vec![tcp(5432, 5432, &[], &["10.0.1.0/24"])]));
        assert_eq!(partial.verdict, Verdict::Blocked);
        assert!(partial.detail.contains("not subnet-f2"), "{}", partial.detail);
    }

    #[test]
    fn a_missing_outbound_rule_is_named() {
        let mut f = fn_a();
        f.security_groups[0].egress = vec![tcp(443, 443, &[], &["0.0.0.0/0"])];
        let v = analyse_path(&f, &db(vec![tcp(5432, 5432, &["sg-fn"], &[])]));
        assert_eq!(v.verdict, Verdict::Blocked);
        assert!(v.detail.contains("missing outbound rule on sg-fn"), "{}", v.detail);
        assert!(v.fixes[0].starts_with("aws ec2 authorize-security-group-egress --group-id sg-fn"), "{:?}", v.fixes);
        f.security_groups[0].egress = vec![tcp(5432, 5432, &["sg-db"], &[])];
        assert_eq!(analyse_path(&f, &db(vec![tcp(5432, 5432, &["sg-fn"], &[])])).verdict, Verdict::Open);
    }

    #[test]
    fn another_vpc_needs_a_peering_route_or_a_public_endpoint_through_nat() {
        let mut f = function("vpc-b", vec![subnet("subnet-b1", "vpc-b", "172.16.1.0/24")]);
        f.security_groups[0].vpc_id = Some("vpc-b".into());
        let rule = vec![tcp(5432, 5432, &["sg-fn"], &[])];
        let blocked = analyse_path(&f, &db(rule.clone()));
        assert_eq!(blocked.verdict, Verdict::Blocked);
        assert!(blocked.detail.contains("no route from the functions' VPC vpc-b"), "{}", blocked.detail);
        assert!(blocked.fixes.iter().any(|c| c.contains("create-vpc-peering-connection")), "{:?}", blocked.fixes);

        f.routes
            .get_mut("subnet-b1")
            .unwrap()
            .push(Route { destination: cidr("10.0.0.0/16"), target: RouteTarget::Peering("pcx-1".into()) });
        let peered = analyse_path(&f, &db(rule));
        assert_eq!(peered.verdict, Verdict::Open, "{}", peered.detail);
        assert!(peered.detail.contains("via pcx-1"), "{}", peered.detail);

        let mut public = function("vpc-b", vec![subnet("subnet-b1", "vpc-b", "172.16.1.0/24")]);
        public
            .routes
            .get_mut("subnet-b1")
            .unwrap()
            .push(Route { destination: cidr("0.0.0.0/0"), target: RouteTarget::NatGateway("nat-1".into()) });
        public.nat_public_ips.insert("nat-1".into(), vec![cidr("203.0.113.9/32")]);
        let mut d = db(vec![tcp(5432, 5432, &["sg-fn"], &[])]);
        d.publicly_accessible = Some(true);
        let v = analyse_path(&public, &d);
        assert_eq!(v.verdict, Verdict::Blocked, "a group reference does not match traffic from a NAT address");
        assert!(v.fixes[0].ends_with("--cidr 203.0.113.9/32"), "{:?}", v.fixes);
        d.security_groups[0].ingress.push(tcp(5432, 5432, &[], &["203.0.113.9/32"]));
        assert_eq!(analyse_path(&public, &d).verdict, Verdict::Open);
    }

    #[test]
    fn the_aws_apis_are_reached_through_nat_or_vpc_endpoints() {
        let mut f = fn_a();
        let v = analyse_api_access(&f, "us-east-1", &[Api::Rds, Api::SecretsManager]);
        assert_eq!(v.verdict, Verdict::Blocked);
        assert!(v.detail.contains("Secrets Manager (no VPC endpoint)"), "{}", v.detail);
        assert!(
            v.fixes.iter().any(|c| c.contains("--service-name com.amazonaws.us-east-1.secretsmanager")),
            "{:?}",
            v.fixes
        );
        for svc in ["rds", "secretsmanager"] {
            f.endpoints.push(VpcEndpoint {
                id: format!("vpce-{svc}"),
                service_name: format!("com.amazonaws.us-east-1.{svc}"),
                private_dns: true,
                state: "available".into(),
            });
        }
        assert_eq!(analyse_api_access(&f, "us-east-1", &[Api::Rds, Api::SecretsManager]).verdict, Verdict::Open);
        let mut nat = fn_a();
        for routes in nat.routes.values_mut() {
            routes.push(Route { destination: cidr("0.0.0.0/0"), target: RouteTarget::NatGateway("nat-1".into()) });
        }
        assert_eq!(analyse_api_access(&nat, "us-east-1", &[Api::SecretsManager]).verdict, Verdict::Open);
    }
}
