"""SQL migrations, applied in name order by ``vectoros.db.migrate``. Never edit an applied one."""
