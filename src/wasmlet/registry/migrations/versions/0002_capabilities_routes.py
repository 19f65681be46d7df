"""capabilities and routes: kv_entries, secrets, routes, invocations.http_calls

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kv_entries",
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("scope", "key"),
    )
    op.create_table(
        "secrets",
        sa.Column("function", sa.String(length=63), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("function", "key"),
    )
    op.create_table(
        "routes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("path_prefix", sa.String(length=1024), nullable=False),
        sa.Column("methods", sa.String(length=200), nullable=False),
        sa.Column("function", sa.String(length=63), nullable=False),
        sa.Column("strip_prefix", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("host", "path_prefix", "methods", name="uq_routes_match"),
    )
    with op.batch_alter_table("invocations") as batch:
        batch.add_column(sa.Column("http_calls", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invocations") as batch:
        batch.drop_column("http_calls")
    op.drop_table("routes")
    op.drop_table("secrets")
    op.drop_table("kv_entries")
