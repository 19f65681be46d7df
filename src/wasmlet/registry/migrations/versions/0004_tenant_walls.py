"""tenant walls: hosts assigned to namespaces; spec ceilings, KV quotas and egress per namespace

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_QUOTA_COLUMNS = (
    ("max_memory_mb", sa.Integer()),
    ("max_timeout_ms", sa.Integer()),
    ("max_fuel", sa.BigInteger()),
    ("max_pool_size", sa.Integer()),
    ("kv_max_keys", sa.Integer()),
    ("kv_max_bytes", sa.BigInteger()),
    ("egress_allow", sa.Text()),
)


def upgrade() -> None:
    op.create_table(
        "namespace_hosts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=32), nullable=False),
        sa.Column("pattern", sa.String(length=253), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pattern"),
    )
    op.create_index("ix_namespace_hosts_namespace", "namespace_hosts", ["namespace"])
    with op.batch_alter_table("namespace_quotas") as batch:
        for name, type_ in _QUOTA_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("namespace_quotas") as batch:
        for name, _ in reversed(_QUOTA_COLUMNS):
            batch.drop_column(name)
    op.drop_index("ix_namespace_hosts_namespace", table_name="namespace_hosts")
    op.drop_table("namespace_hosts")
