"""access control: api_keys, namespace_quotas; names wide enough for <namespace>~<name>

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Columns holding a (possibly qualified) function name: 32 + 1 + 63 characters.
_NAME_COLUMNS = (
    ("functions", "name"),
    ("invocations", "function"),
    ("secrets", "function"),
    ("routes", "function"),
)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("namespace", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scopes", sa.String(length=100), nullable=False),
        sa.Column("secret_hash", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_id"),
    )
    op.create_index("ix_api_keys_namespace", "api_keys", ["namespace"])
    op.create_table(
        "namespace_quotas",
        sa.Column("namespace", sa.String(length=32), nullable=False),
        sa.Column("requests_per_second", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("max_concurrency", sa.Integer(), nullable=True),
        sa.Column("max_functions", sa.Integer(), nullable=True),
        sa.Column("max_module_bytes", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("namespace"),
    )
    for table, column in _NAME_COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.String(length=100), existing_type=sa.String(length=63)
            )


def downgrade() -> None:
    for table, column in _NAME_COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                column, type_=sa.String(length=63), existing_type=sa.String(length=100)
            )
    op.drop_table("namespace_quotas")
    op.drop_index("ix_api_keys_namespace", table_name="api_keys")
    op.drop_table("api_keys")
