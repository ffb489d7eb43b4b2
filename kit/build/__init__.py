"""kit build, stage by stage: plan, preflight, base images, builder, optimize (host side), gate, bake, smoke, record."""
