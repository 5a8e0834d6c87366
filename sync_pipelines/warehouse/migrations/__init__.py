"""Alembic revisions of the warehouse (driven by :mod:`sync_pipelines.warehouse.migrate`).

Layout: ``env.py`` (how Alembic reaches the database), ``script.py.mako`` (the template of a new
revision) and ``versions/`` (the revisions, one file each, named by their revision id). There is no
``alembic.ini``: :func:`sync_pipelines.warehouse.migrate.alembic_config` builds the same
configuration in code, and ``python -m sync_pipelines.warehouse.migrate`` is the ``alembic``
command line on top of it.

What is a revision, and what is not
-----------------------------------
The module tables (and every table of the code's metadata) follow the code on their own: a field
added to, dropped from or retyped in ``sync_pipelines/zoho/modules.py`` needs no revision, the
upgrade compares the database with the metadata and applies the difference. A revision is for what
that comparison cannot express:

* a **rename** (the comparison would see a dropped column and a new, empty one);
* a **data move**: filling a new column from old ones, splitting or merging columns, rewriting
  values, moving rows between tables;
* a change of one of the fixed tables that must happen in a given order with a data step.

Revisions run first, then the table-driven part. ``0001_baseline`` creates the schema of commit
``5d5b30b`` exactly, frozen (it does not import ``schema.py``). A fresh database runs no revision:
it is made from the code's metadata and stamped at the newest revision, so a revision must never be
the only place where something a warehouse needs comes from.

Writing a revision
------------------
::

    .venv/bin/python -m sync_pipelines.warehouse.migrate revision -m "rename teacher phone"

writes ``versions/0002_rename_teacher_phone.py`` (numbered after the newest revision). Fill in
``upgrade()`` with ``op`` calls (``op.batch_alter_table`` for column changes, so that SQLite and
PostgreSQL take the same code) and ``op.execute`` / ``op.get_bind()`` for data.

A revision must be **guarded**: it runs on warehouses of every age — made before migrations, or
at any revision since, and each brought by the table-driven part to whatever the code of its last
upgrade said, which may be earlier or later than what the revision's author saw. Check what is
there before touching it, with
:mod:`sync_pipelines.warehouse.migrations.helpers`::

    from sync_pipelines.warehouse.migrations.helpers import has_column

    def upgrade() -> None:
        if has_column("zoho_teachers", "phone_number") and not has_column("zoho_teachers", "mobile"):
            with op.batch_alter_table("zoho_teachers") as batch:
                batch.alter_column("phone_number", new_column_name="mobile")

A revision that needs a column the code adds (to fill it) creates it itself, guarded the same way;
the table-driven part then finds it in place. Do not use ``revision --autogenerate``: what it would
write is what the table-driven part does anyway.

Other commands: ``… migrate history``, ``… migrate current``, ``… migrate heads`` (Alembic's, with
``--url`` or ``WAREHOUSE_URL`` naming the database), and ``… migrate apply``, which runs the whole
upgrade (revisions, then the table-driven part) and prints its report.
"""
