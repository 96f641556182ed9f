//! `rota-bench`: the load generator and benchmark runner (issue #9). Not
//! built yet; exits non-zero so no script mistakes it for a result.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("rota-bench is not implemented yet; see issue #9")
}
