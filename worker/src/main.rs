//! `rota-worker`: not built yet (issue #4). Exits non-zero so that no script
//! mistakes it for a working agent.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("rota-worker is not implemented yet; see issue #4")
}
