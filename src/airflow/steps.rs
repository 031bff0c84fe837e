//! Start-up steps between the wait and the command, each run as the service
//! user under supervision: extra pip packages, `airflow db migrate`, the
//! admin user, and the init.d scripts. A failing step stops start-up with
//! its exit code; its output stays visible (inherited). Secrets in a step's
//! arguments are never logged.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::airflow::version::{self, Version};
use crate::env::layers::{Layered, Source};
use crate::error::Failure;
use crate::readiness::schema::{revisions_off_thread, standing, Standing};
use crate::settings::{parse_bool, MigrateMode, Settings};
use crate::signals::SignalInbox;
use crate::supervisor::program::find_program;
use crate::supervisor::reap::ChildExit;
use crate::supervisor::spawn::SpawnRequest;
use crate::supervisor::steps::run_step;
use crate::wire::url::Target;

/// `airflow db migrate` runs at most this often before start-up fails.
const MIGRATE_ATTEMPTS: u32 = 3;
const MIGRATE_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// MIGRATE=auto's look at the schema, connect to last row.
const SCHEMA_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits `how_long` while still answering signals: TERM/INT end start-up.
fn pause(inbox: &SignalInbox, how_long: Duration) -> Result<(), Failure> {
    let until = std::time::Instant::now() + how_long;
    while std::time::Instant::now() < until {
        crate::supervisor::startup_signal_verdict(inbox.wait(Some(until), None))?;
    }
    Ok(())
}

pub struct Steps<'a> {
    pub inbox: &'a SignalInbox,
    pub layers: &'a mut Layered,
    pub version: Option<Version>,
    pub init_dir: &'a Path,
    pub init_dir_explicit: bool,
    pub limit: Duration,
    pub migrate_mode: MigrateMode,
    /// The metadata database, when the wait found it answering.
    pub database: Option<&'a Target>,
}

/// The start-up phase: every step, in order, as the settings say.
pub fn run_all(
    inbox: &SignalInbox,
    settings: &Settings,
    layers: &mut Layered,
    version: Option<Version>,
    database: Option<&Target>,
) -> Result<(), Failure> {
    Steps {
        migrate_mode: settings.migrate,
        database,
        inbox,
        layers,
        version,
        init_dir: &settings.init_dir,
        init_dir_explicit: settings.init_dir_explicit,
        limit: settings.step_timeout,
    }
    .run_all()
}

fn flag(layers: &Layered, name: &str) -> Result<bool, Failure> {
    match layers.get(name) {
        None => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| {
            Failure::config(format!(
                "{}={v:?} is not a boolean; expected true or false",
                layers.describe(name)
            ))
        }),
    }
}

impl Steps<'_> {
    pub fn run_all(&mut self) -> Result<(), Failure> {
        self.pip_install()?;
        self.migrate()?;
        self.create_admin_user()?;
        self.init_scripts()
    }

    fn path_var(&self) -> Option<OsString> {
        self.layers.get("PATH").map(OsString::from)
    }

    /// Runs `argv` as a step; `shown` is how it appears in the log.
    fn run(&self, argv: &[OsString], shown: &str) -> Result<(), Failure> {
        let Some((name, args)) = argv.split_first() else {
            return Ok(());
        };
        let path = self.path_var();
        let program = find_program(name, path.as_deref()).map_err(|f| {
            Failure::new(
                f.exit_code,
                format!("start-up step `{shown}`: {}", f.message),
            )
        })?;
        tracing::info!(step = shown, "running start-up step");
        let env = self.layers.child_env();
        let outcome = run_step(
            self.inbox,
            &SpawnRequest {
                program: &program,
                argv0: name,
                args,
                env: &env,
                capture_stdout: false,
                capture_stderr: false,
                take_terminal: true,
                dir: None,
            },
            self.limit,
            shown,
        )?;
        match outcome.exit {
            ChildExit::Code(0) => Ok(()),
            exit => Err(Failure::new(
                exit.status_code(),
                format!(
                    "start-up step `{shown}` failed with exit status {}; its output is above",
                    exit.status_code()
                ),
            )),
        }
    }

    fn airflow(&self, args: &[&str]) -> Vec<OsString> {
        std::iter::once("airflow")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// MIGRATE=auto: is the schema already at the installed heads? Any
    /// doubt (no database target, a failed query) means "migrate". The
    /// query runs off this thread: TERM/INT end start-up at once.
    fn schema_at_head(&self) -> Result<bool, Failure> {
        let (MigrateMode::Auto, Some(database)) = (self.migrate_mode, self.database) else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        let schemas = match crate::airflow::installed_schemas(self.layers, self.version) {
            Ok(schemas) => schemas,
            Err(f) => {
                tracing::info!("cannot tell the expected schema ({}); migrating", f.message);
                return Ok(false);
            }
        };
        Ok(
            match revisions_off_thread(self.inbox, database, SCHEMA_CHECK_TIMEOUT, &schemas)? {
                Ok(current) => {
                    let at_head = schemas
                        .iter()
                        .zip(&current)
                        .all(|(schema, revisions)| standing(schema, revisions) == Standing::AtHead);
                    if at_head {
                        let heads: Vec<String> = schemas
                            .iter()
                            .map(|s| format!("{} {}", s.name, s.head))
                            .collect();
                        tracing::info!(
                        "the schema is already at its head ({}; checked in {} ms): skipping airflow db migrate (AIRFLOW_ENTRYPOINT_MIGRATE=always runs it anyway)",
                        heads.join(", "),
                        started.elapsed().as_millis()
                    );
                    }
                    at_head
                }
                Err(e) => {
                    tracing::info!("cannot read the schema version ({e}); migrating");
                    false
                }
            },
        )
    }

    fn migrate(&mut self) -> Result<(), Failure> {
        let migrate = flag(self.layers, "_AIRFLOW_DB_MIGRATE")?;
        let upgrade = flag(self.layers, "_AIRFLOW_DB_UPGRADE")?;
        if upgrade {
            tracing::warn!("_AIRFLOW_DB_UPGRADE is deprecated; use _AIRFLOW_DB_MIGRATE=true");
        }
        if !(migrate || upgrade) || self.schema_at_head()? {
            return Ok(());
        }
        // `db migrate` arrived in 2.7. Airflow's migration lock serialises
        // the schema changes, but not what follows them: two containers
        // migrating a fresh database at once can both insert the default
        // pool, and one fails on the unique key. Migrating is idempotent, so
        // a failed run is tried again before start-up gives up.
        let sub = match self.version {
            Some(v) if v < Version(2, 7, 0) => "upgrade",
            _ => "migrate",
        };
        let shown = format!("airflow db {sub}");
        for attempt in 1..=MIGRATE_ATTEMPTS {
            match self.run(&self.airflow(&["db", sub]), &shown) {
                Ok(()) => return Ok(()),
                // A signal ended it (128+N from `interrupted`): stop now.
                Err(f) if attempt == MIGRATE_ATTEMPTS || f.message.starts_with("received SIG") => {
                    return Err(f)
                }
                Err(f) => {
                    tracing::warn!(
                        attempt,
                        of = MIGRATE_ATTEMPTS,
                        "{}; another container may be migrating the same database: trying again",
                        f.message
                    );
                    pause(self.inbox, MIGRATE_RETRY_PAUSE)?;
                }
            }
        }
        Ok(())
    }

    fn create_admin_user(&mut self) -> Result<(), Failure> {
        if !flag(self.layers, "_AIRFLOW_WWW_USER_CREATE")? {
            return Ok(());
        }
        let get = |k: &str, d: &str| self.layers.get(k).unwrap_or(d).to_string();
        let username = get("_AIRFLOW_WWW_USER_USERNAME", "admin");
        let password = match self.layers.get("_AIRFLOW_WWW_USER_PASSWORD_CMD") {
            Some(cmd) => self.password_from_cmd(cmd)?,
            None => get("_AIRFLOW_WWW_USER_PASSWORD", ""),
        };
        if password.is_empty() {
            return Err(Failure::config(
                "_AIRFLOW_WWW_USER_CREATE=true needs _AIRFLOW_WWW_USER_PASSWORD or _AIRFLOW_WWW_USER_PASSWORD_CMD",
            ));
        }
        let role = get("_AIRFLOW_WWW_USER_ROLE", "Admin");
        let auth_manager = self.layers.get("AIRFLOW__CORE__AUTH_MANAGER").unwrap_or("");
        let fab = auth_manager.to_ascii_lowercase().contains("fab")
            || self.version.is_some_and(|v| v.0 < 3);
        if fab {
            let argv: Vec<OsString> = [
                "airflow",
                "users",
                "create",
                "--username",
                &username,
                "--password",
                &password,
                "--email",
                &get("_AIRFLOW_WWW_USER_EMAIL", "airflowadmin@example.com"),
                "--firstname",
                &get("_AIRFLOW_WWW_USER_FIRSTNAME", "Airflow"),
                "--lastname",
                &get("_AIRFLOW_WWW_USER_LASTNAME", "Admin"),
                "--role",
                &role,
            ]
            .iter()
            .map(OsString::from)
            .collect();
            return self.run(
                &argv,
                &format!(
                    "airflow users create --username {username} --role {role} (password hidden)"
                ),
            );
        }
        self.simple_auth_manager_user(&username, &password, &role)
    }

    /// Airflow 3's simple auth manager keeps users in a setting and their
    /// passwords in a JSON file: write both instead of a CLI call.
    fn simple_auth_manager_user(
        &mut self,
        username: &str,
        password: &str,
        role: &str,
    ) -> Result<(), Failure> {
        let home = self
            .layers
            .get("AIRFLOW_HOME")
            .unwrap_or("/tmp")
            .to_string();
        let file = PathBuf::from(
            self.layers
                .get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
                .map(String::from)
                .unwrap_or_else(|| format!("{home}/simple_auth_manager_passwords.json.generated")),
        );
        let mut json = String::from("{");
        crate::logging::push_json_string(&mut json, username);
        json.push(':');
        crate::logging::push_json_string(&mut json, password);
        json.push('}');
        write_private(&file, &json).map_err(|e| {
            Failure::config(format!(
                "cannot write the simple auth manager's passwords file {}: {e}",
                file.display()
            ))
        })?;
        let why = || Source::Derived("_AIRFLOW_WWW_USER_CREATE (simple auth manager)".into());
        self.layers.set(
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
            format!("{username}:{}", role.to_ascii_lowercase()),
            why(),
        );
        self.layers.set(
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
            file.display().to_string(),
            why(),
        );
        tracing::info!(
            user = username,
            role,
            file = file.display().to_string(),
            "admin user set up for the simple auth manager (password hidden)"
        );
        Ok(())
    }

    fn password_from_cmd(&self, cmd: &str) -> Result<String, Failure> {
        let argv = crate::shell_words::split(cmd)
            .map_err(|e| Failure::config(format!("_AIRFLOW_WWW_USER_PASSWORD_CMD: {e}")))?;
        let path = self.path_var();
        let env = self.layers.child_env();
        crate::supervisor::steps::captured_output(
            self.inbox,
            &argv,
            &env,
            path.as_deref(),
            crate::supervisor::steps::CMD_TIME_LIMIT,
            "_AIRFLOW_WWW_USER_PASSWORD_CMD",
        )
        .map(|out| out.trim().to_string())
    }

    /// `_PIP_ADDITIONAL_REQUIREMENTS`: into the environment that runs
    /// Airflow — the venv itself, or the user site outside one.
    fn pip_install(&mut self) -> Result<(), Failure> {
        let Some(requirements) = self
            .layers
            .get("_PIP_ADDITIONAL_REQUIREMENTS")
            .map(String::from)
        else {
            return Ok(());
        };
        let packages = crate::shell_words::split(&requirements)
            .map_err(|e| Failure::config(format!("_PIP_ADDITIONAL_REQUIREMENTS: {e}")))?;
        if packages.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            packages = requirements.as_str(),
            "_PIP_ADDITIONAL_REQUIREMENTS is for development only: every start installs packages, slowly and unpinned; build them into the image instead"
        );
        let path = self.path_var();
        let script = find_program(OsStr::new("airflow"), path.as_deref()).ok();
        let python = script
            .as_deref()
            .and_then(version::interpreter)
            .or_else(|| {
                // The `python` beside the `airflow` script (a venv's bin).
                let beside = script.as_deref()?.parent()?.join("python");
                beside.exists().then_some(beside)
            })
            .unwrap_or_else(|| PathBuf::from("python3"));
        let in_venv = python
            .parent()
            .and_then(Path::parent)
            .is_some_and(|prefix| prefix.join("pyvenv.cfg").exists());
        let mut argv: Vec<OsString> = vec![
            python.into_os_string(),
            "-m".into(),
            "pip".into(),
            "install".into(),
            "--no-cache-dir".into(),
        ];
        if !in_venv {
            argv.push("--user".into());
        }
        argv.extend(packages.iter().map(OsString::from));
        self.run(&argv, &format!("pip install {requirements}"))
    }

    /// Every executable file in INIT_DIR, in lexical order.
    fn init_scripts(&mut self) -> Result<(), Failure> {
        let entries = match std::fs::read_dir(self.init_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.init_dir_explicit => {
                return Ok(())
            }
            Err(e) => {
                return Err(Failure::config(format!(
                    "cannot read AIRFLOW_ENTRYPOINT_INIT_DIR={}: {e}",
                    self.init_dir.display()
                )))
            }
        };
        let mut scripts: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                use std::os::unix::fs::PermissionsExt;
                p.is_file()
                    && p.metadata()
                        .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
            })
            .collect();
        scripts.sort();
        for script in scripts {
            let shown = script.display().to_string();
            self.run(&[script.into_os_string()], &shown)?;
        }
        Ok(())
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}
