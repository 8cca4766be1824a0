//! The RESP port's connection commands, answered as they are read (in order with the
//! replies of the requests before them, see [`super::resp_conn::Ordered`]): PING, ECHO,
//! SELECT, AUTH, HELLO, CLIENT, COMMAND, RESET, QUIT. Texts as Redis 7.0 writes them.

use super::resp_conn::{Handled, Resp, RespRequest, DATABASES};
use crate::resp::{Reply, RespVersion};

/// Redis's reply to a command with the wrong number of arguments.
pub(super) fn wrong_arity(name: &[u8]) -> String {
    format!(
        "wrong number of arguments for '{}' command",
        String::from_utf8_lossy(&name.to_ascii_lowercase())
    )
}

/// A HELP subcommand's reply: its lines as simple strings.
pub(super) fn help(req: &RespRequest, lines: &[&str]) {
    req.answer(|r| {
        r.array_len(lines.len());
        for l in lines {
            r.simple(l);
        }
    });
}

/// Redis's reply to an unknown command: its name and the start of its arguments.
pub(super) fn unknown_command(args: &[Vec<u8>]) -> String {
    let clip = |a: &[u8]| {
        let s = String::from_utf8_lossy(a);
        s.chars().take(128).collect::<String>()
    };
    let mut text = format!(
        "unknown command '{}', with args beginning with: ",
        clip(&args[0])
    );
    for a in &args[1..] {
        text.push_str(&format!("'{}' ", clip(a)));
    }
    text
}

/// Answers `req` if it is a connection command (`name` upper-cased); `None` otherwise.
pub(super) fn connection_command(
    conn: &mut Resp,
    name: &[u8],
    req: &RespRequest,
) -> Option<Handled> {
    let args = &req.args;
    match name {
        b"PING" => match args.len() {
            1 => req.answer(|r| {
                r.simple("PONG");
            }),
            2 => req.answer(|r| {
                r.bulk(&args[1]);
            }),
            _ => req.answer(|r| {
                r.error(wrong_arity(name));
            }),
        },
        b"ECHO" if args.len() == 2 => req.answer(|r| {
            r.bulk(&args[1]);
        }),
        b"SELECT" if args.len() == 2 => select(conn, req),
        b"AUTH" => auth(conn, req),
        b"HELLO" => hello(conn, req),
        b"CLIENT" if args.len() >= 2 => client(conn, req),
        b"COMMAND" => command(req),
        b"RESET" if args.len() == 1 => {
            let needs_auth = !conn.shard().shared.config.auth_token.is_empty();
            *conn.ctx_mut() = super::resp_conn::Ctx {
                db: 0,
                version: RespVersion::Resp2,
            };
            conn.set_name(None);
            if needs_auth {
                conn.reset_authentication();
            }
            req.answer(|r| {
                r.simple("RESET");
            });
        }
        // The server has no functions and no scripts: flushing them is done at once (the
        // suites' and clients' clean-up sends these).
        b"FUNCTION" | b"SCRIPT" if args.len() >= 2 && args[1].eq_ignore_ascii_case(b"FLUSH") => req
            .answer(|r| {
                r.ok();
            }),
        b"QUIT" => {
            req.answer(|r| {
                r.ok();
            });
            return Some(Handled::Close);
        }
        b"ECHO" | b"SELECT" | b"CLIENT" | b"RESET" => req.answer(|r| {
            r.error(wrong_arity(name));
        }),
        _ => return None,
    }
    Some(Handled::Answered)
}

fn select(conn: &mut Resp, req: &RespRequest) {
    let db = std::str::from_utf8(&req.args[1])
        .ok()
        .and_then(|s| s.parse::<i64>().ok());
    match db {
        None => req.answer(|r| {
            r.error("value is not an integer or out of range");
        }),
        Some(db) if !(0..i64::from(DATABASES)).contains(&db) => req.answer(|r| {
            r.error("DB index is out of range");
        }),
        Some(db) => {
            conn.ctx_mut().db = db as u32;
            req.answer(|r| {
                r.ok();
            });
        }
    }
}

/// Checks a password against `auth_token` in constant time.
fn password_ok(conn: &Resp, password: &[u8]) -> bool {
    super::native::token_matches(password, &conn.shard().shared.config.auth_token)
}

fn auth(conn: &mut Resp, req: &RespRequest) {
    let args = &req.args;
    let (user, password) = match args.len() {
        2 => (None, &args[1]),
        3 => (Some(&args[1]), &args[2]),
        _ => {
            return req.answer(|r| {
                r.error(wrong_arity(b"auth"));
            })
        }
    };
    if conn.shard().shared.config.auth_token.is_empty() {
        return req.answer(|r| {
            r.error(
                "AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?",
            );
        });
    }
    if user.is_some_and(|u| u != b"default") || !password_ok(conn, password) {
        return req.answer(|r| {
            r.error("-WRONGPASS invalid username-password pair or user is disabled.");
        });
    }
    conn.authenticate();
    req.answer(|r| {
        r.ok();
    });
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]].
fn hello(conn: &mut Resp, req: &RespRequest) {
    let args = &req.args;
    let mut version = conn_version(conn);
    if let Some(v) = args.get(1) {
        match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(2) => version = RespVersion::Resp2,
            Some(3) => version = RespVersion::Resp3,
            Some(_) => {
                return req.answer(|r| {
                    r.error("-NOPROTO unsupported protocol version");
                })
            }
            None => {
                return req.answer(|r| {
                    r.error("Protocol version is not an integer or out of range");
                })
            }
        }
    }
    let mut i = 2;
    let mut name = None;
    while i < args.len() {
        let more = args.len() - i - 1;
        match args[i].to_ascii_uppercase().as_slice() {
            b"AUTH" if more >= 2 => {
                if conn.shard().shared.config.auth_token.is_empty()
                    || args[i + 1] != b"default"
                    || !password_ok(conn, &args[i + 2])
                {
                    return req.answer(|r| {
                        r.error("-WRONGPASS invalid username-password pair or user is disabled.");
                    });
                }
                conn.authenticate();
                i += 3;
            }
            b"SETNAME" if more >= 1 => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => {
                let opt = String::from_utf8_lossy(&args[i]).into_owned();
                return req.answer(|r| {
                    r.error(format!("Syntax error in HELLO option '{opt}'"));
                });
            }
        }
    }
    if !conn.is_authenticated() {
        return req.answer(|r| {
            r.error("-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        });
    }
    if name.is_some() {
        conn.set_name(name);
    }
    conn.ctx_mut().version = version;
    let id = conn.id();
    let mut bytes = Vec::new();
    let mut r = Reply::new(&mut bytes, version);
    r.map_len(7);
    r.bulk("server").bulk("redis");
    r.bulk("version").bulk(REDIS_VERSION);
    r.bulk("proto")
        .int(if version == RespVersion::Resp3 { 3 } else { 2 });
    r.bulk("id").int(id as i64);
    r.bulk("mode").bulk("standalone");
    r.bulk("role").bulk("master");
    r.bulk("modules").array_len(0);
    req.answer_bytes(&bytes);
}

/// The Redis version the RESP port reports (the semantics it follows).
pub(super) const REDIS_VERSION: &str = "7.0.15";

fn conn_version(conn: &mut Resp) -> RespVersion {
    conn.ctx_mut().version
}

fn client(conn: &mut Resp, req: &RespRequest) {
    let args = &req.args;
    let sub = args[1].to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"SETNAME", 3) => {
            if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                return req.answer(|r| {
                    r.error("Client names cannot contain spaces, newlines or special characters.");
                });
            }
            let name = (!args[2].is_empty()).then(|| args[2].clone());
            conn.set_name(name);
            req.answer(|r| {
                r.ok();
            });
        }
        (b"GETNAME", 2) => {
            let name = conn.name().map(<[u8]>::to_vec);
            req.answer(|r| {
                match name {
                    Some(n) => r.bulk(n),
                    None => r.null(),
                };
            });
        }
        (b"ID", 2) => {
            let id = conn.id() as i64;
            req.answer(|r| {
                r.int(id);
            });
        }
        (b"INFO", 2) | (b"LIST", 2) => {
            let line = client_line(conn);
            req.answer(|r| {
                r.bulk(line);
            });
        }
        _ => {
            let sub = String::from_utf8_lossy(&args[1]).into_owned();
            req.answer(|r| {
                r.error(format!(
                    "unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP."
                ));
            });
        }
    }
}

/// This connection as CLIENT INFO describes it (the fields a client reads).
fn client_line(conn: &mut Resp) -> String {
    let name = conn
        .name()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .unwrap_or_default();
    let ctx = *conn.ctx_mut();
    let resp = if ctx.version == RespVersion::Resp3 {
        3
    } else {
        2
    };
    format!(
        "id={} name={name} db={} flags=N cmd=client|info resp={resp}\n",
        conn.id(),
        ctx.db
    )
}

/// COMMAND, COMMAND COUNT, COMMAND DOCS / INFO (enough for redis-cli: no documentation).
fn command(req: &RespRequest) {
    let sub = req.args.get(1).map(|s| s.to_ascii_uppercase());
    match sub.as_deref() {
        None => req.answer(|r| {
            r.array_len(0);
        }),
        Some(b"COUNT") => req.answer(|r| {
            r.int((super::resp_streams::COMMANDS.len() + super::resp_ev::COMMANDS.len()) as i64);
        }),
        Some(b"DOCS") => req.answer(|r| {
            r.map_len(0);
        }),
        Some(b"INFO") => {
            let n = req.args.len() - 2;
            req.answer(|r| {
                r.array_len(n);
                for _ in 0..n {
                    r.null_array();
                }
            });
        }
        Some(_) => {
            let sub = String::from_utf8_lossy(&req.args[1]).into_owned();
            req.answer(|r| {
                r.error(format!(
                    "unknown subcommand or wrong number of arguments for '{sub}'. Try COMMAND HELP."
                ));
            });
        }
    }
}
